# Shared by the compose end-to-end scripts (sourced, not run): the compose
# command, pass/fail counting with a teardown that shows logs on failure,
# polling, and reading a node's status with p2pctl. Set COMPOSE_FLAGS (e.g.
# "--profile cluster") and P2PCTL before sourcing. Exits 0 with SKIPPED when
# there is no compose tool or Docker engine.

if docker compose version >/dev/null 2>&1; then compose() { docker compose ${COMPOSE_FLAGS:-} "$@"; }
elif command -v docker-compose >/dev/null; then compose() { docker-compose ${COMPOSE_FLAGS:-} "$@"; }
else echo "SKIPPED: no docker compose / docker-compose"; exit 0; fi
if ! docker info >/dev/null 2>&1; then echo "SKIPPED: no Docker engine reachable"; exit 0; fi

passed=0 failed=0
ok()   { echo "ok   - $*"; passed=$((passed + 1)); }
fail() { echo "FAIL - $*"; failed=$((failed + 1)); }
teardown() {
  if [ "$failed" -gt 0 ]; then compose logs --no-color --tail 40 >&2 || true; fi
  compose down -v --remove-orphans >/dev/null 2>&1 || true
}
trap teardown EXIT

# Polls "$@" (a command) until it succeeds or $timeout seconds pass.
until_ok() { local timeout=$1; shift; local end=$((SECONDS + timeout));
  while ! "$@" >/dev/null 2>&1; do [ $SECONDS -ge $end ] && return 1; sleep 0.5; done; }
# Whether every named service's healthcheck passes.
healthy_services() { for s in "$@"; do
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$(compose ps -q "$s")" 2>/dev/null)" = healthy ] || return 1; done; }
height() { "$P2PCTL" --json --node "$1" node status 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["height"])'; }
tip()    { "$P2PCTL" --json --node "$1" node status 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["tip_hash"])'; }
# Whether the nodes "$@" share one tip at height $1 or more.
same_tip_at_least() { local h=$1; shift; local t; t=$(tip "$1") || return 1
  for n in "$@"; do [ "$(tip "$n")" = "$t" ] || return 1; [ "$(height "$n")" -ge "$h" ] || return 1; done; }
