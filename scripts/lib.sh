# Shared helpers for scripts/*.sh (sourced, not run).

# port_free PORT → exit 0 when nothing listens on 127.0.0.1:PORT / 0.0.0.0:PORT.
port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# first_free_port START → prints the first free port from START upwards.
first_free_port() {
  local p="$1"
  while ! port_free "$p"; do p=$((p + 1)); done
  echo "$p"
}

# redis_up URL → exit 0 when Redis answers PING.
redis_up() {
  node -e '
    const net = require("node:net");
    const u = new URL(process.argv[1]);
    const s = net.connect(Number(u.port || 6379), u.hostname);
    s.setTimeout(2000, () => process.exit(1));
    s.on("error", () => process.exit(1));
    s.on("connect", () => s.write("PING\r\n"));
    s.on("data", (d) => process.exit(String(d).startsWith("+PONG") ? 0 : 1));
  ' "$1"
}

# ensure_node_modules → installs the locked dependencies (`npm ci`) when
# node_modules is missing or older than the lock file. chdb lists optional
# per-platform packages the registry does not serve (darwin-*, linux-arm64);
# package-lock.json carries an entry for each (version, os, cpu, optional; no
# tarball), which npm 11's ci requires and which every platform but theirs
# skips. scripts/check-packaging.sh proves npm ci on npm 10 as well.
ensure_node_modules() {
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "== installing npm dependencies (npm ci; chdb is large: the first time takes a while)"
    npm ci --no-audit --no-fund
  fi
}
