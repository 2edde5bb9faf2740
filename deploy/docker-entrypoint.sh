#!/bin/sh
# Entrypoint of the featureedit image: `api`, `worker`, or any other `featureedit` command.
#
#   api     exec uvicorn on service.main:create_app, 0.0.0.0:$PORT (default 8000),
#           $FEATUREEDIT_API_WORKERS processes (default 1). Needs REDIS_URL and
#           FEATUREEDIT_PUBLIC_URL (the URL clients use: links in responses).
#   worker  exec `featureedit worker "$@"` (e.g. --models gemma-2-2b, --classes gpu-24g,
#           --device cuda:0). Needs REDIS_URL.
#   other   exec `featureedit "$@"` (world build, keys create, models, ...).
#
# exec: the server is PID 1 and gets SIGTERM directly (the worker finishes its job, then exits).
set -eu

role="${1:-api}"
[ "$#" -gt 0 ] && shift

case "$role" in
api)
    # listening on 0.0.0.0: FEATUREEDIT_PUBLIC_URL must be set (a clear error, not Host-header links)
    python -c "from service.config import Settings; Settings().check_bind('0.0.0.0')" || exit 2
    exec uvicorn service.main:create_app --factory \
        --host 0.0.0.0 --port "${PORT:-8000}" \
        --workers "${FEATUREEDIT_API_WORKERS:-1}" \
        --proxy-headers --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1}" \
        --timeout-graceful-shutdown 30 "$@"
    ;;
worker)
    exec featureedit worker "$@"
    ;;
*)
    exec featureedit "$role" "$@"
    ;;
esac
