// A minimal Docker token server (the "realm" of a Bearer challenge), run as a
// child process by test/helpers/registry.ts. It is a real HTTPS server that
// the real docker-registry trusts through `auth.token.rootcertbundle`:
//
//   GET /token?service=S&scope=repository:NAME:pull,push[&scope=…]
//   Authorization: Basic base64(user:password)
//   → 200 {"token": JWT, "access_token": JWT, "expires_in": 300, "issued_at": …}
//   → 401 without or with wrong credentials
//
// The JWT is ES256-signed with the signer key; its certificate travels in the
// `x5c` header and is also the registry's root bundle. Usage:
//   bun token-server.ts CONFIG.json   (prints "listening <port>" when ready)

import { createPrivateKey, randomBytes, sign, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";

interface Config {
  port: number;
  certFile: string;
  keyFile: string;
  signerCertFile: string;
  signerKeyFile: string;
  issuer: string;
  service: string;
  user: string;
  password: string;
}

const cfg = JSON.parse(readFileSync(process.argv[2]!, "utf8")) as Config;
const signerKey = createPrivateKey(readFileSync(cfg.signerKeyFile));
const signerDer = new X509Certificate(readFileSync(cfg.signerCertFile)).raw;

const b64url = (b: Buffer | string) => Buffer.from(b).toString("base64url");

function jwt(sub: string, access: { type: string; name: string; actions: string[] }[]): string {
  const now = Math.floor(Date.now() / 1000);
  const header = { typ: "JWT", alg: "ES256", x5c: [signerDer.toString("base64")] };
  const claims = {
    iss: cfg.issuer,
    sub,
    aud: cfg.service,
    exp: now + 300,
    nbf: now - 60,
    iat: now,
    jti: randomBytes(12).toString("hex"),
    access,
  };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = sign("sha256", Buffer.from(input), { key: signerKey, dsaEncoding: "ieee-p1363" });
  return `${input}.${b64url(sig)}`;
}

let requests = 0;
const server = Bun.serve({
  hostname: "127.0.0.1",
  port: cfg.port,
  tls: { cert: readFileSync(cfg.certFile, "utf8"), key: readFileSync(cfg.keyFile, "utf8") },
  fetch(req) {
    requests++;
    const url = new URL(req.url);
    if (url.pathname === "/stats") return Response.json({ requests });
    if (url.pathname !== "/token") return new Response("not found", { status: 404 });
    const auth = req.headers.get("authorization") ?? "";
    const m = /^Basic (.+)$/i.exec(auth);
    const creds = m ? Buffer.from(m[1]!, "base64").toString("utf8") : "";
    if (creds !== `${cfg.user}:${cfg.password}`) {
      return Response.json({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }, { status: 401 });
    }
    if (url.searchParams.get("service") !== cfg.service) {
      return Response.json({ errors: [{ code: "DENIED", message: "unknown service" }] }, { status: 400 });
    }
    const access = url.searchParams.getAll("scope").flatMap((s) => {
      const parts = s.split(":");
      if (parts.length < 3) return [];
      const actions = parts.pop()!.split(",").filter((a) => a === "pull" || a === "push" || a === "*");
      const type = parts.shift()!;
      return [{ type, name: parts.join(":"), actions }];
    });
    const token = jwt(cfg.user, access);
    return Response.json({ token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() });
  },
});
process.stdout.write(`listening ${server.port}\n`);
