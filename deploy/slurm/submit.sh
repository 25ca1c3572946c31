#!/bin/bash
# Submit one argonic server job and a client array that starts once the server job runs.
#
#   ARGONIC_SHARED=/shared/argonic ARGONIC_EVENTS=/data/events-%a.h5 \
#       deploy/slurm/submit.sh 0-99 [extra sbatch options for the server, e.g. --gres=gpu:1]
#
# Clients wait for the server to publish its endpoint (argonic-clients.sbatch), so they may
# start as soon as the server job has started (--dependency=after).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
array=${1:?usage: submit.sh ARRAY_RANGE [server sbatch options...]}
shift
server_job=$(sbatch --parsable --export=ALL "$@" "$here/argonic-server.sbatch")
server_job=${server_job%%;*}
client_job=$(sbatch --parsable --export=ALL --array="$array" --dependency="after:$server_job" \
    "$here/argonic-clients.sbatch")
echo "server job $server_job, client array $client_job"
echo "cancel the server when the clients are done: scancel $server_job"
