// Starts fauxqs (SQS) on 127.0.0.1 only. fauxqs hard-codes host 0.0.0.0, so every listen call is
// pinned to loopback before fauxqs is imported. Port: FAUXQS_PORT. Installed next to node_modules
// by scripts/localaws-install.sh because ESM resolution ignores NODE_PATH.
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args.length > 0 && typeof args[0] === "object" && args[0] !== null) {
    args[0] = { ...args[0], host: "127.0.0.1" };
  } else if (typeof args[0] === "number" || typeof args[0] === "string") {
    // listen(port[, host][, backlog][, cb]): replace or insert the host.
    if (typeof args[1] === "string") args[1] = "127.0.0.1";
    else args.splice(1, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};

const { startFauxqs } = await import("fauxqs");
const server = await startFauxqs({ logger: process.env.FAUXQS_LOGGER === "true" });
console.log(`fauxqs listening on ${server.address}`);
