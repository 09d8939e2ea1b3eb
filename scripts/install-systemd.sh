#!/usr/bin/env bash
# Installs ringmq as a systemd service with its shards pinned to chosen CPUs: the
# binary, /etc/ringmq/ringmq.toml (with `cpus` and `shards` written), the unit
# (with CPUAffinity), and the `ringmq` system user. Running it again gives the same
# result; --uninstall removes the binary and the unit and keeps the configuration.
#
#   scripts/install-systemd.sh --cpus 2-7 [--config FILE] [--binary PATH]
#                              [--prefix DIR] [--root DIR]
#   scripts/install-systemd.sh --uninstall [--prefix DIR] [--root DIR]
#
# --cpus LIST    CPUs for the shards, one shard each, e.g. 2-7 or 1,3,5-6
# --config FILE  configuration to install (default: keep the installed one, or
#                start from deploy/ringmq.toml); `cpus` and `shards` are set in it
# --binary PATH  the ringmq binary (default: target/release/ringmq of this repo)
# --prefix DIR   where the binary goes, as DIR/bin/ringmq (default: /usr/local)
# --root DIR     install under DIR instead of / (a staging tree): no user is
#                created and systemctl is not called
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

die() {
  echo "install-systemd: $*" >&2
  exit 1
}

repo=$(cd "$(dirname "$0")/.." && pwd)
cpus=""
config=""
binary=""
prefix=/usr/local
root=/
uninstall=no

while [ $# -gt 0 ]; do
  case "$1" in
    --cpus) cpus=${2:?--cpus needs a list}; shift 2 ;;
    --config) config=${2:?--config needs a file}; shift 2 ;;
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --uninstall) uninstall=yes; shift ;;
    -h|--help) usage ;;
    *) echo "install-systemd: unknown argument: $1" >&2; usage ;;
  esac
done

case "$prefix" in /*) ;; *) die "--prefix must be an absolute path: $prefix" ;; esac
root=${root%/}
staging=yes
[ -z "$root" ] && staging=no

bin_path="$prefix/bin/ringmq"
config_path=/etc/ringmq/ringmq.toml
unit_path=/etc/systemd/system/ringmq.service

systemctl_() {
  if [ "$staging" = no ]; then
    systemctl "$@"
  fi
}

if [ "$uninstall" = yes ]; then
  if [ "$staging" = no ] && systemctl is-enabled --quiet ringmq 2>/dev/null; then
    systemctl disable --now ringmq
  fi
  rm -f "$root$unit_path" "$root$bin_path"
  systemctl_ daemon-reload
  echo "removed $unit_path and $bin_path"
  echo "kept $config_path, /var/lib/ringmq and the ringmq user; remove them by hand if unwanted"
  exit 0
fi

# `2-4,7` -> the number of CPUs it lists, or nothing if it is not such a list.
count_cpus() {
  local list=$1 count=0 part first last
  [[ "$list" =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] || return 1
  IFS=, read -ra parts <<<"$list"
  for part in "${parts[@]}"; do
    first=${part%-*}
    last=${part#*-}
    [ "$last" -ge "$first" ] || return 1
    count=$((count + last - first + 1))
  done
  echo "$count"
}

[ -n "$cpus" ] || die "--cpus is required, e.g. --cpus 2-7 (the CPUs the shards are pinned to)"
shards=$(count_cpus "$cpus") || die "--cpus $cpus: expected CPU numbers and ranges such as 2-7 or 1,3,5-6"

if [ -z "$binary" ]; then
  binary="$repo/target/release/ringmq"
  [ -x "$binary" ] || die "no binary at $binary: build it (cargo build --release) or pass --binary PATH"
fi
[ -x "$binary" ] || die "--binary $binary is not an executable file"

# Sets top-level `key = value` in a TOML file: replaced where it is, else added
# before the first table (a key after `[admin]` would belong to that table).
set_top_level_key() {
  local file=$1 key=$2 value=$3
  awk -v key="$key" -v value="$value" '
    BEGIN { done = 0; in_table = 0 }
    /^[[:space:]]*\[/ {
      if (!done) { print key " = " value; print ""; done = 1 }
      in_table = 1
    }
    !in_table && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
      if (!done) { print key " = " value; done = 1 }
      next
    }
    { print }
    END { if (!done) print key " = " value }
  ' "$file"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. The binary.
install -d "$root$prefix/bin"
if ! cmp -s "$binary" "$root$bin_path"; then
  install -m 0755 "$binary" "$root$bin_path.new"
  mv -f "$root$bin_path.new" "$root$bin_path"
fi

# 2. The configuration: the one given, else the installed one, else the example.
if [ -n "$config" ]; then
  [ -f "$config" ] || die "--config $config: no such file"
  cp "$config" "$work/ringmq.toml"
elif [ -f "$root$config_path" ]; then
  cp "$root$config_path" "$work/ringmq.toml"
else
  cp "$repo/deploy/ringmq.toml" "$work/ringmq.toml"
fi
set_top_level_key "$work/ringmq.toml" cpus "\"$cpus\"" >"$work/step1.toml"
set_top_level_key "$work/step1.toml" shards "$shards" >"$work/ringmq.toml"
"$root$bin_path" check-config "$work/ringmq.toml" >/dev/null \
  || die "the configuration would not be valid; nothing changed in $config_path"
install -d -m 0755 "$root/etc/ringmq"
install -m 0640 "$work/ringmq.toml" "$root$config_path"

# 3. The unit, with this binary and these CPUs.
sed -e "s|^ExecStart=.*|ExecStart=$bin_path --config $config_path|" \
    -e "s|^CPUAffinity=.*|CPUAffinity=$cpus|" \
    "$repo/deploy/systemd/ringmq.service" >"$work/ringmq.service"
install -d "$root/etc/systemd/system"
install -m 0644 "$work/ringmq.service" "$root$unit_path"

# 4. The user, its group and the service.
if [ "$staging" = no ]; then
  if ! getent passwd ringmq >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/ringmq --no-create-home \
      --shell /usr/sbin/nologin --comment "ringmq MQTT broker" ringmq
  fi
  chgrp ringmq "$config_path"
  systemctl daemon-reload
  systemctl enable ringmq >/dev/null
  if systemctl is-active --quiet ringmq; then
    echo "ringmq is running: 'systemctl restart ringmq' to use what was installed"
  else
    echo "start it with: systemctl start ringmq"
  fi
fi
echo "installed $bin_path, $config_path (cpus = \"$cpus\", shards = $shards) and $unit_path (CPUAffinity=$cpus)${root:+ under $root}"
