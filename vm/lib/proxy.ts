// A tiny HTTP CONNECT proxy for the host side of the VM tests: it lets a
// host process reach the demo registry under the name guests use
// (10.0.2.100:5000 → the registry's 127.0.0.1 port), so what the host
// installs records the image reference a guest can pull from again
// (`cfsboot upgrade` in the guest). Only the mapped targets are allowed;
// TLS stays end to end (the client verifies the registry's certificate for
// 10.0.2.100 itself). Used through HTTPS_PROXY, which Bun's fetch honours.

import { type Server, type Socket, connect, createServer } from "node:net";

export interface ConnectProxy {
  url: string;
  port: number;
  stop(): Promise<void>;
}

export async function startConnectProxy(map: Record<string, string>): Promise<ConnectProxy> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    client.on("error", () => client.destroy());
    let head = "";
    const onData = (b: Buffer) => {
      head += b.toString("latin1");
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) {
        if (head.length > 8192) client.destroy();
        return;
      }
      client.off("data", onData);
      const m = /^CONNECT (\S+) HTTP\/1\.[01]\r\n/.exec(head);
      const target = m?.[1] ? map[m[1]] : undefined;
      if (!target) {
        client.end("HTTP/1.1 403 Forbidden\r\n\r\n");
        return;
      }
      const i = target.lastIndexOf(":");
      const upstream = connect(Number(target.slice(i + 1)), target.slice(0, i), () => {
        client.write("HTTP/1.1 200 Connection established\r\n\r\n");
        const rest = Buffer.from(head.slice(end + 4), "latin1");
        if (rest.length) upstream.write(rest);
        upstream.pipe(client);
        client.pipe(upstream);
      });
      sockets.add(upstream);
      upstream.on("close", () => sockets.delete(upstream));
      upstream.on("error", () => client.destroy());
      client.on("close", () => upstream.destroy());
    };
    client.on("data", onData);
  });
  const port: number = await new Promise((res, rej) => {
    server.once("error", rej);
    server.listen(0, "127.0.0.1", () => {
      const a = server.address();
      res(typeof a === "object" && a ? a.port : 0);
    });
  });
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    stop: () =>
      new Promise<void>((res) => {
        for (const s of sockets) s.destroy();
        server.close(() => res());
      }),
  };
}
