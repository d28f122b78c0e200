#!/usr/bin/env bash
# Regenerates the mix task output shown in README.md ("Mix tasks"): starts a node holding a
# known footprint (8 processes sharing one 8 MiB binary, a worker that dropped 4 x 4 MiB, one that
# dropped 6 x 1 MiB of store binaries, one keeping 100-byte slices of three 2 MiB binaries) and
# runs mix binscope.top and mix binscope.leaks against it as a hidden node.
set -euo pipefail
cd "$(dirname "$0")/../mix_project"
MIX_ENV=test mix compile >/dev/null

work=$(mktemp -d)
trap 'kill "$target" 2>/dev/null || true; rm -rf "$work"' EXIT
echo binscope_readme > "$work/cookie"
chmod 600 "$work/cookie"
node="binscope_readme_$$@127.0.0.1"

cat > "$work/scenario.exs" <<'EXS'
alias Binscope.LeakScenario, as: S
big = :binary.copy(<<7>>, 8 * 1_048_576)
_sharers = S.sharers(big, 8)
S.burst_then_idle(4, 4 * 1_048_576)
S.burst_then_idle(6, 1_048_576, store: true)
S.slice_keeper(3, 2 * 1_048_576, 100)
File.write!(System.fetch_env!("READY"), "ready")
Process.sleep(:infinity)
EXS

READY="$work/ready" MIX_ENV=test elixir --name "$node" --cookie binscope_readme \
  -pa _build/test/lib/binscope/ebin "$work/scenario.exs" >/dev/null 2>&1 &
target=$!
for _ in $(seq 1 100); do [ -f "$work/ready" ] && break; sleep 0.1; done

echo '$ mix binscope.top --by binary_pss --limit 5'
MIX_ENV=test mix binscope.top --node "$node" --cookie-file "$work/cookie" --by binary_pss --limit 5 2>/dev/null
echo
echo '$ mix binscope.leaks --limit 4'
MIX_ENV=test mix binscope.leaks --node "$node" --cookie-file "$work/cookie" --limit 4 2>/dev/null
