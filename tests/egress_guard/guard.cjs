// The egress guard for Node processes (NODE_OPTIONS=--require <this file>): the twin of sitecustomize.py.
// With INFERBOOK_EGRESS_LOG set it refuses DNS lookups of names other than localhost and this host, and
// TCP connects to addresses that are not loopback, appending one JSON line per attempt to that file; hosts
// in INFERBOOK_EGRESS_ALLOW (the package registries) pass and are recorded with "allowed": true.
"use strict";
const LOG = process.env.INFERBOOK_EGRESS_LOG;
if (LOG) {
  const fs = require("fs");
  const net = require("net");
  const dns = require("dns");
  const os = require("os");
  const host = os.hostname().toLowerCase();
  const localNames = new Set(["localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", "", host,
                              host.split(".")[0]]);
  const allow = new Set((process.env.INFERBOOK_EGRESS_ALLOW || "").split(",").map((h) => h.trim().toLowerCase())
    .filter(Boolean));
  const own = new Set(Object.values(os.networkInterfaces()).flat().map((i) => i.address));
  const isLocal = (h) => {
    const name = String(h == null ? "localhost" : h).toLowerCase().split("%")[0];
    if (net.isIP(name)) {
      return name.startsWith("127.") || name === "::1" || name === "0.0.0.0" || name === "::" ||
             name.startsWith("::ffff:127.") || own.has(name);
    }
    return localNames.has(name);
  };
  const record = (what, target, allowed = false) => {
    const frames = (new Error().stack || "").split("\n").slice(3, 9).map((s) => s.trim());
    try {
      fs.appendFileSync(LOG, JSON.stringify({ runtime: "node", pid: process.pid, argv: process.argv.slice(0, 3),
        what, target, allowed, time: Date.now() / 1000, frames }) + "\n");
    } catch (_) { /* the log is best effort */ }
  };
  const refusal = (code, target) => Object.assign(
    new Error(`${code} ${target} (refused by the inferbook egress guard: offline)`), { code, syscall: "connect" });

  const realConnect = net.Socket.prototype.connect;
  net.Socket.prototype.connect = function (...args) {
    let opts = Array.isArray(args[0]) ? args[0][0] : args[0];
    if (typeof opts !== "object" || opts === null) opts = { port: args[0], host: typeof args[1] === "string" ? args[1] : undefined };
    if (!opts.path && allow.has(String(opts.host).toLowerCase())) {
      record("connect-tcp", `${opts.host}:${opts.port}`, true);
    } else if (!opts.path && !isLocal(opts.host)) {
      const target = `${opts.host}:${opts.port}`;
      record("connect-tcp", target);
      process.nextTick(() => this.destroy(refusal("ECONNREFUSED", target)));
      return this;
    }
    return realConnect.apply(this, args);
  };

  const realLookup = dns.lookup;
  dns.lookup = function (name, options, callback) {
    const cb = typeof options === "function" ? options : callback;
    if (!isLocal(name) && !allow.has(String(name).toLowerCase())) {
      record("dns", String(name));
      process.nextTick(() => cb(Object.assign(refusal("ENOTFOUND", String(name)), { syscall: "getaddrinfo", hostname: name })));
      return {};
    }
    return realLookup.apply(this, arguments);
  };
  const realPromiseLookup = dns.promises.lookup;
  dns.promises.lookup = async function (name, ...rest) {
    if (!isLocal(name) && !allow.has(String(name).toLowerCase())) {
      record("dns", String(name));
      throw Object.assign(refusal("ENOTFOUND", String(name)), { syscall: "getaddrinfo", hostname: name });
    }
    return realPromiseLookup.call(this, name, ...rest);
  };
}
