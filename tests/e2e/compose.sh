#!/usr/bin/env bash
# End-to-end test of the docker-compose network, with real clients, TLS on
# every link (grpcurl -insecure, p2pctl anonymous TLS, mining through each
# node's admin API on its loopback, reached with `compose exec`):
#   up -> healthy -> mine on node1 -> seen on node2/node3 (p2pctl and grpcurl)
#   -> stop node3 -> mine more -> start node3 -> it catches up
#   -> restart everything -> registry and chains survive (named volumes)
# Tears down even on failure. Prints "N passed, N failed".
#
# usage: tests/e2e/compose.sh   (needs a Docker engine; builds the image
# offline with scripts/build-image-offline.sh unless P2P_SKIP_IMAGE_BUILD=1)
set -uo pipefail
cd "$(dirname "$0")/../.."
# Unique per run: concurrent runs never share containers, networks or volumes.
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-p2pe2e$$}
export P2P_IMAGE=${P2P_IMAGE:-p2p-chain:local}
# Ports away from the defaults, so a devnet on the host does not collide.
export P2P_BOOTSTRAP_PORT=${P2P_BOOTSTRAP_PORT:-14000} P2P_NODE1_PORT=${P2P_NODE1_PORT:-13001}
export P2P_NODE2_PORT=${P2P_NODE2_PORT:-13002} P2P_NODE3_PORT=${P2P_NODE3_PORT:-13003}
export P2P_BOOTSTRAP_METRICS_PORT=${P2P_BOOTSTRAP_METRICS_PORT:-19100} P2P_NODE1_METRICS_PORT=${P2P_NODE1_METRICS_PORT:-19101}
export P2P_NODE2_METRICS_PORT=${P2P_NODE2_METRICS_PORT:-19102} P2P_NODE3_METRICS_PORT=${P2P_NODE3_METRICS_PORT:-19103}
B=127.0.0.1:$P2P_BOOTSTRAP_PORT N1=127.0.0.1:$P2P_NODE1_PORT N2=127.0.0.1:$P2P_NODE2_PORT N3=127.0.0.1:$P2P_NODE3_PORT
P2PCTL=${P2PCTL:-./target/release/p2pctl}

. tests/e2e/lib.sh
healthy() { healthy_services bootstrap node1 node2 node3; }
# Inside a container (no published port needed; works while it is partitioned).
tip_in() { compose exec -T "$1" p2pctl --json --node 127.0.0.1:3000 node status 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["tip_hash"])'; }
all_on() { local want=$1; for s in node1 node2 node3; do [ "$(tip_in "$s")" = "$want" ] || return 1; done; }
registered() { [ "$("$P2PCTL" --json --bootstrap "$B" bootstrap peers 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["peers"]))')" = "$1" ]; }
# Mining is an operator's call: the node's admin API listens on its own loopback.
mine() { compose exec -T "$1" p2pctl node mine "$2"; }

if [ "${P2P_SKIP_IMAGE_BUILD:-0}" != 1 ]; then
  scripts/build-image-offline.sh "$P2P_IMAGE" || { fail "offline image build"; exit 1; }
fi
compose down -v --remove-orphans >/dev/null 2>&1
compose up -d --no-build || { fail "compose up"; exit 1; }

until_ok 120 healthy && ok "all four services report healthy (grpc.health.v1)" || fail "services healthy"
until_ok 60 registered 3 && ok "three nodes registered and verified by the bootstrap" || fail "nodes registered"
until_ok 60 same_tip_at_least 0 "$N1" "$N2" "$N3" && ok "nodes agree on genesis" || fail "genesis agreement"

h0=$(height "$N1")
mine node1 "hello from compose" >/dev/null && ok "mined on node1 (admin API)" || fail "mine on node1"
# (grpcurl fails here on purpose; with pipefail its output is checked apart.)
on_p2p=$(grpcurl -insecure -d '{"data":"bm8="}' "$N1" p2p.admin.v1.Admin/MineBlock 2>&1)
case "$on_p2p" in *Unimplemented*) ok "the public P2P port serves no MineBlock (Unimplemented)" ;;
  *) fail "MineBlock on the P2P port: $on_p2p" ;; esac
until_ok 60 same_tip_at_least $((h0 + 1)) "$N1" "$N2" "$N3" && ok "block reached node2 and node3 (p2pctl)" || fail "block propagation"
hash=$(tip "$N1")
for n in "$N2" "$N3"; do
  got=$(grpcurl -insecure "$n" p2p.node.v1.Node/GetStatus 2>/dev/null | python3 -c 'import json,sys,base64; print(base64.b64decode(json.load(sys.stdin)["tipHash"]).hex())')
  [ "$got" = "$hash" ] && ok "grpcurl GetStatus on $n shows the mined tip" || fail "grpcurl on $n ($got != $hash)"
done
# Advertised addresses (node1:3000) resolve inside the compose network, so
# network status runs there; the image ships p2pctl.
compose exec -T bootstrap p2pctl --bootstrap 127.0.0.1:4000 network status | tail -1 | grep -q "all 3 reachable nodes agree" \
  && ok "p2pctl network status (inside the network, each node proving its registered id): all 3 agree" || fail "network status"
# Prometheus metrics from the host: node2's tip height moved, the bootstrap counted registrations.
metric() { "$P2PCTL" metrics "$1" --grep "$2" 2>/dev/null | awk -v m="$2" '$1 == m {print $2}'; }
m2=$(metric "127.0.0.1:$P2P_NODE2_METRICS_PORT" p2p_node_tip_height)
[ "${m2%.*}" -ge $((h0 + 1)) ] 2>/dev/null && ok "node2's /metrics shows its tip height ($m2)" || fail "node2 metrics (${m2:-none})"
mb=$(metric "127.0.0.1:$P2P_BOOTSTRAP_METRICS_PORT" 'p2p_bootstrap_register_requests_total{outcome="ok"}')
[ "${mb%.*}" -ge 3 ] 2>/dev/null && ok "the bootstrap's /metrics counts registrations ($mb)" || fail "bootstrap metrics (${mb:-none})"
conns=$(compose exec -T node1 p2pctl --json node connections 2>/dev/null | python3 -c 'import json,sys; print(sum(1 for c in json.load(sys.stdin)["connections"] if c["verified"] and c["state"] == "PEER_STATE_ACTIVE"))')
[ "${conns:-0}" -ge 2 ] && ok "node1's peers are active under ids their TLS handshakes proved ($conns)" || fail "verified connections on node1 (${conns:-none})"

compose stop node3 >/dev/null 2>&1 && ok "stopped node3" || fail "stop node3"
until_ok 30 registered 2 && ok "node3 deregistered on SIGTERM" || fail "node3 deregistered"
for i in 1 2 3; do mine node1 "while node3 is down $i" >/dev/null || fail "mine $i"; done
until_ok 60 same_tip_at_least $((h0 + 4)) "$N1" "$N2" && ok "node1 and node2 at +4" || fail "node2 follows"
compose start node3 >/dev/null 2>&1 && ok "started node3" || fail "start node3"
until_ok 90 same_tip_at_least $((h0 + 4)) "$N1" "$N2" "$N3" && ok "node3 caught up after restart" || fail "node3 catch-up"

# Bootstrap outage: gossip does not need it; nodes re-register when it returns.
compose stop bootstrap >/dev/null 2>&1 && ok "stopped the bootstrap" || fail "stop bootstrap"
h=$(height "$N1")
mine node2 "bootstrap is down" >/dev/null || fail "mine with bootstrap down"
until_ok 60 same_tip_at_least $((h + 1)) "$N1" "$N2" "$N3" && ok "blocks propagate with the bootstrap down" || fail "propagation without bootstrap"
compose start bootstrap >/dev/null 2>&1 || fail "start bootstrap"
until_ok 90 registered 3 && ok "nodes registered again after the bootstrap returned" || fail "re-registration"

# Partition: node3 cut off, both sides mine (node3 more), then heal.
net="${COMPOSE_PROJECT_NAME}_p2p"
c3=$(compose ps -q node3)
h=$(height "$N1")
docker network disconnect "$net" "$c3" && ok "partitioned node3 (docker network disconnect)" || fail "disconnect node3"
mine node1 "majority side" >/dev/null || fail "mine on node1 during partition"
mined3=0
for i in 1 2 3; do
  mine node3 "minority side $i" >/dev/null && mined3=$((mined3 + 1))
done
[ "$mined3" = 3 ] && ok "mined 3 blocks on the cut-off node3" || fail "mine on node3 during partition ($mined3/3)"
until_ok 30 same_tip_at_least $((h + 1)) "$N1" "$N2" && ok "majority side agrees during the partition" || fail "majority agreement"
heavy=$(tip_in node3)
[ -n "$heavy" ] && [ "$heavy" != "$(tip "$N1")" ] && ok "the sides diverged" || fail "sides did not diverge"
docker network connect --alias node3 "$net" "$c3" && ok "healed the partition" || fail "reconnect node3"
until_ok 120 all_on "$heavy" && ok "every node converged on the heavier chain after healing" || fail "convergence after healing"

tip_before=$(tip "$N1")
compose restart >/dev/null 2>&1 && ok "restarted every service" || fail "compose restart"
until_ok 120 healthy || fail "healthy after restart"
until_ok 60 same_tip_at_least $((h0 + 4)) "$N1" "$N2" "$N3" && [ "$(tip "$N3")" = "$tip_before" ] \
  && ok "chains survive a restart (named volumes)" || fail "chains after restart"
until_ok 60 registered 3 && ok "registry refilled after restart" || fail "registry after restart"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
