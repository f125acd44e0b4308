#!/usr/bin/env bash
# mpirun.sh NP SECONDS PROGRAM [ARGS...] - run PROGRAM on NP local ranks (oversubscribed as
# needed) under a hard time limit: a hung multi-rank test fails instead of hanging CI.
set -u
np=$1 limit=$2
shift 2
extra=(--oversubscribe --bind-to none)
[ "$(id -u)" = 0 ] && extra+=(--allow-run-as-root)
exec timeout -k 5 "$limit" mpirun "${extra[@]}" -np "$np" "$@"
