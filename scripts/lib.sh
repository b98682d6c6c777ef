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

# ensure_node_modules → installs the locked dependencies when node_modules is
# missing or older than the lock file. Not `npm ci`: chdb lists optional
# per-platform packages that the registry does not serve (darwin, linux-arm64),
# so npm ci's lock check refuses; `npm install` installs exactly the locked
# versions and leaves package-lock.json unchanged (checked in CI).
ensure_node_modules() {
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "== installing npm dependencies (chdb is large: the first time takes a while)"
    npm install --no-audit --no-fund
  fi
}
