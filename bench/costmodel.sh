#!/usr/bin/env bash
# costmodel.sh GPT_TEXT [STEPS] - the planner's simulated step time beside the measured one, for
# the byte-level GPT (examples/gpt_text) trained under mpirun in several layouts on this machine's
# CPU ranks: data parallel over 2 and 4 ranks, pipelines of 2 stages (GPipe, 1F1B) and 4 stages
# (1F1B), DP=2 x PP=2, operator sharding over 2 ranks (TP=2), DP=2 x TP=2, PP=2 x TP=2 and
# DP=2 x PP=2 x TP=2 (8 ranks). Each run probes the machine, plans on the measured cluster, trains
# STEPS steps and compares the median step with the prediction. Prints a table, then per layout
# `RESULT costmodel_error_<layout> <|predicted/measured - 1|>` and `RESULT comm_hidden_<layout>
# <share of rank 0's communication time that ran behind compute>`.
set -uo pipefail
exe=${1:?usage: costmodel.sh GPT_TEXT [STEPS]}
steps=${2:-40}
extra=(--oversubscribe --bind-to none)
[ "$(id -u)" = 0 ] && extra+=(--allow-run-as-root)
export OMPI_MCA_mpi_yield_when_idle=1 OPENBLAS_NUM_THREADS=1
layouts=("2|--stages 1" "4|--stages 1" "2|--stages 2 --schedule gpipe" "2|--stages 2 --schedule 1f1b"
         "4|--stages 4 --schedule 1f1b" "4|--stages 2 --schedule 1f1b" "2|--tp 2" "4|--tp 2"
         "4|--stages 2 --tp 2 --schedule 1f1b" "8|--stages 2 --tp 2 --schedule 1f1b")
results=()
printf '%-22s %12s %12s %8s %8s\n' layout "predicted ms" "measured ms" error hidden
for l in "${layouts[@]}"; do
  np=${l%%|*}
  read -r -a args <<<"${l#*|}"
  out=$(timeout 300 mpirun "${extra[@]}" -np "$np" "$exe" --steps "$steps" --eval-every "$steps" --sample 0 \
        "${args[@]}" 2>&1)
  line=$(grep -m1 "^cost model:" <<<"$out")
  res=$(grep -m1 "^RESULT costmodel_error_" <<<"$out")
  if [ -z "$res" ]; then
    echo "np $np ${args[*]}: no result"
    tail -5 <<<"$out"
    continue
  fi
  pred=$(sed -E 's/.*predicted ([0-9.]+) ms.*/\1/' <<<"$line")
  meas=$(sed -E 's/.*measured ([0-9.]+) ms.*/\1/' <<<"$line")
  name=${res#RESULT costmodel_error_}
  hid=$(grep -m1 "^RESULT comm_hidden_" <<<"$out")
  printf '%-22s %12s %12s %8s %8s\n' "${name% *}" "$pred" "$meas" "${name##* }" "${hid##* }"
  results+=("$res" "$hid")
done
printf '%s\n' "${results[@]}"
