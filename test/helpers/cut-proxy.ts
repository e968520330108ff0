// A TCP proxy in front of a test registry that can make the registry "go
// away" at a chosen moment: once armed with a byte count, it forwards that
// many more bytes from the registry to the client, then resets every
// connection and stops listening (new connections are refused). TLS passes
// through untouched (end to end between cfsboot and the registry), so the
// registry's certificate (SAN 127.0.0.1) is valid for the proxy's port too.
//
// This makes "the registry goes away in the middle of a download" happen at
// a fixed point of the transfer instead of racing a fast machine.

import { createServer, connect, type Server, type Socket } from "node:net";

export interface CutProxy {
  port: number;
  /** `127.0.0.1:<port>`, the registry as clients of the proxy name it. */
  host: string;
  /** After `bytes` more bytes from the registry, cut everything. */
  arm(bytes: number): void;
  /** Resolves once the cut happened. */
  cut: Promise<void>;
  /** Bytes forwarded from the registry so far. */
  forwarded(): number;
  close(): Promise<void>;
}

export async function startCutProxy(targetPort: number): Promise<CutProxy> {
  const sockets = new Set<Socket>();
  let forwarded = 0;
  let limit = Infinity;
  let isCut = false;
  let onCut: () => void = () => {};
  const cut = new Promise<void>((res) => (onCut = res));
  let server: Server;

  const doCut = () => {
    if (isCut) return;
    isCut = true;
    server.close();
    for (const s of sockets) s.resetAndDestroy();
    onCut();
  };

  server = createServer((client) => {
    if (isCut) return client.resetAndDestroy();
    const upstream = connect(targetPort, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.on("data", (d) => upstream.write(d));
    upstream.on("data", (d: Buffer) => {
      if (isCut) return;
      const room = limit - forwarded;
      if (d.length >= room) {
        if (room > 0) client.write(d.subarray(0, room));
        forwarded += Math.max(room, 0);
        doCut();
        return;
      }
      forwarded += d.length;
      client.write(d);
    });
  });
  await new Promise<void>((res, rej) => server.once("error", rej).listen(0, "127.0.0.1", () => res()));
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("cut proxy: no port");
  return {
    port: addr.port,
    host: `127.0.0.1:${addr.port}`,
    arm(bytes: number) {
      limit = forwarded + bytes;
    },
    cut,
    forwarded: () => forwarded,
    async close() {
      doCut();
    },
  };
}
