#!/usr/bin/env bash
# Online `chatgate migrate` on a big Django database (issue 26): the test
# tests/postgres_migrate.rs::migrate_online_under_writers_keeps_every_write_under_200_ms
# with 2,000,000 rows in chatapp_message instead of CI's 200,000. Each
# round loads a fresh database (generate_series), starts a gateway on it,
# keeps writing through the gateway and through plain SQL (a message, a
# login, a conversation, in turn), runs the migrate, and prints the
# migrate's duration and the worst write latency during it; the test
# fails if a write took 200 ms or more.
#
#   loadtest/migrate.sh                 (ROWS=2000000 ROUNDS=3)
#
# Needs PostgreSQL on 127.0.0.1:5432 (trust, user postgres; another server:
# CHATGATE_TEST_POSTGRES=postgres://user@host:port). Each round creates and
# drops its own database (about 250 MB at 2,000,000 rows).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-2000000}
ROUNDS=${ROUNDS:-3}
cargo test -q --test postgres_migrate --no-run
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS, $ROWS rows"
  CI=1 CHATGATE_MIGRATE_ROWS=$ROWS cargo test -q --test postgres_migrate \
    migrate_online_under_writers -- --nocapture 2>&1 |
    grep -E "online migrate:|slow .* write|test result|panicked"
done
