#!/usr/bin/env bash
# End-to-end test of the compose `cluster` profile: a 3-member etcd cluster
# (image built offline from Debian's package), two bootstrap servers on it,
# three nodes whose --bootstrap list names both. Only the profile's services
# are started (the default network is tests/e2e/compose.sh's):
#   up -> healthy -> both bootstraps list the same three verified nodes under
#   one registry id -> a block mined on cnode1 reaches cnode2 and cnode3
#   -> one etcd member stopped: registrations through either bootstrap go on
#   -> bootstrap-a stopped: a restarted node registers through bootstrap-b
# Tears down even on failure. Prints "N passed, N failed".
#
# usage: tests/e2e/compose-cluster.sh   (needs a Docker engine; builds both
# images offline unless P2P_SKIP_IMAGE_BUILD=1)
set -uo pipefail
cd "$(dirname "$0")/../.."
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-p2pcluster$$}
export P2P_IMAGE=${P2P_IMAGE:-p2p-chain:local} P2P_ETCD_IMAGE=${P2P_ETCD_IMAGE:-p2p-etcd:local}
export P2P_BOOTSTRAP_A_PORT=${P2P_BOOTSTRAP_A_PORT:-14010} P2P_BOOTSTRAP_B_PORT=${P2P_BOOTSTRAP_B_PORT:-14011}
export P2P_CNODE1_PORT=${P2P_CNODE1_PORT:-13011} P2P_CNODE2_PORT=${P2P_CNODE2_PORT:-13012} P2P_CNODE3_PORT=${P2P_CNODE3_PORT:-13013}
A=127.0.0.1:$P2P_BOOTSTRAP_A_PORT B=127.0.0.1:$P2P_BOOTSTRAP_B_PORT
N1=127.0.0.1:$P2P_CNODE1_PORT N2=127.0.0.1:$P2P_CNODE2_PORT N3=127.0.0.1:$P2P_CNODE3_PORT
P2PCTL=${P2PCTL:-./target/release/p2pctl}
SERVICES=(etcd1 etcd2 etcd3 bootstrap-a bootstrap-b cnode1 cnode2 cnode3)

COMPOSE_FLAGS="--profile cluster"
. tests/e2e/lib.sh
listed() { "$P2PCTL" --json --bootstrap "$1" bootstrap peers --all 2>/dev/null \
  | python3 -c 'import json,sys; print(",".join(sorted(p["address"] for p in json.load(sys.stdin)["peers"])))'; }
lists_cnodes() { [ "$(listed "$1")" = "cnode1:3000,cnode2:3000,cnode3:3000" ]; }
pending_has() { "$P2PCTL" --json --bootstrap "$1" bootstrap peers --all --pending 2>/dev/null \
  | python3 -c 'import json,sys; sys.exit(0 if any(p["address"] == sys.argv[1] for p in json.load(sys.stdin)["peers"]) else 1)' "$2"; }
# Whether $1 lists $2 with a registration (or refresh) at or after $3 (Unix ms).
seen_since() { "$P2PCTL" --json --bootstrap "$1" bootstrap peers --all 2>/dev/null \
  | python3 -c 'import json,sys; sys.exit(0 if any(p["address"] == sys.argv[1] and p["last_seen_unix_ms"] >= int(sys.argv[2]) for p in json.load(sys.stdin)["peers"]) else 1)' "$2" "$3"; }
registry_id() { grpcurl -insecure "$1" p2p.bootstrap.v1.Bootstrap/GetInfo 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["registryId"])'; }

if [ "${P2P_SKIP_IMAGE_BUILD:-0}" != 1 ]; then
  scripts/build-image-offline.sh "$P2P_IMAGE" || { fail "offline image build"; exit 1; }
  scripts/build-etcd-image-offline.sh "$P2P_ETCD_IMAGE" || { fail "offline etcd image build (Debian's etcd-server)"; exit 1; }
fi
compose down -v --remove-orphans >/dev/null 2>&1
compose up -d --no-build "${SERVICES[@]}" || { fail "compose --profile cluster up"; exit 1; }

until_ok 180 healthy_services "${SERVICES[@]}" && ok "etcd1-3, bootstrap-a/b and cnode1-3 report healthy" || fail "services healthy"
until_ok 90 lists_cnodes "$A" && ok "bootstrap-a lists the three verified nodes" || fail "bootstrap-a lists ($(listed "$A"))"
lists_cnodes "$B" && ok "bootstrap-b lists the same three (one registry on etcd)" || fail "bootstrap-b lists ($(listed "$B"))"
ida=$(registry_id "$A"); idb=$(registry_id "$B")
[ -n "$ida" ] && [ "$ida" = "$idb" ] && ok "one registry id on both servers ($ida)" || fail "registry ids ($ida vs $idb)"

h0=$(height "$N1")
compose exec -T cnode1 p2pctl node mine "hello from the cluster profile" >/dev/null && ok "mined on cnode1" || fail "mine on cnode1"
until_ok 60 same_tip_at_least $((h0 + 1)) "$N1" "$N2" "$N3" && ok "the block reached cnode2 and cnode3" || fail "block propagation"

compose stop etcd2 >/dev/null 2>&1 && ok "stopped etcd2 (two of three members left)" || fail "stop etcd2"
"$P2PCTL" --bootstrap "$A" bootstrap register 10.77.0.1:7000 >/dev/null 2>&1 \
  && "$P2PCTL" --bootstrap "$B" bootstrap register 10.77.0.2:7000 >/dev/null 2>&1 \
  && ok "registrations through both bootstraps go on without etcd2" || fail "register without etcd2"
pending_has "$B" 10.77.0.1:7000 && pending_has "$A" 10.77.0.2:7000 \
  && ok "each is visible through the other bootstrap (pending verification)" || fail "cross-server visibility without etcd2"
compose start etcd2 >/dev/null 2>&1 || fail "start etcd2"

compose stop bootstrap-a >/dev/null 2>&1 && ok "stopped bootstrap-a" || fail "stop bootstrap-a"
restarted_ms=$(python3 -c 'import time; print(int(time.time() * 1000))')
compose restart cnode3 >/dev/null 2>&1 || fail "restart cnode3"
# A registration newer than the restart can only have come through
# bootstrap-b (a node refreshes every 40 s; it registers at start).
until_ok 90 seen_since "$B" cnode3:3000 "$restarted_ms" && until_ok 30 healthy_services cnode3 \
  && ok "cnode3, restarted with bootstrap-a down, registered again through bootstrap-b" || fail "failover to bootstrap-b ($(listed "$B"))"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
