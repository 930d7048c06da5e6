#!/usr/bin/env bash
# CI for a fleet repository: on a pull request, show the plan; on the main branch, apply it.
#
#   WRENN_URL      the control plane (e.g. https://wrenn.example.com)
#   WRENN_API_KEY  a platform admin API key (a CI secret)
#   WRENN_CA_CERT  optional: the CA of a control plane with a private certificate
#   CI_EVENT       "pull_request" or "push" (GitHub Actions sets GITHUB_EVENT_NAME)
#   CI_BRANCH      the branch pushed to (GitHub Actions: GITHUB_REF_NAME)
#
# wrennctl's exit codes: 0 no changes, 2 the plan has changes, 1 an error.
set -euo pipefail
cd "$(dirname "$0")"

specs=${SPECS_DIR:-specs}
set_name=${APPLY_SET:-gitops-example}
event=${CI_EVENT:-${GITHUB_EVENT_NAME:-pull_request}}
branch=${CI_BRANCH:-${GITHUB_REF_NAME:-}}
main_branch=${MAIN_BRANCH:-main}

if [[ "$event" == "pull_request" ]]; then
  echo "ci: plan of $specs (apply set $set_name)"
  status=0
  wrennctl diff -f "$specs" --set "$set_name" --prune || status=$?
  case $status in
    0) echo "ci: no changes" ;;
    2) echo "ci: the plan above is applied when this is merged into $main_branch" ;;
    *) echo "ci: wrennctl diff failed (exit $status)" >&2; exit "$status" ;;
  esac
  exit 0
fi

if [[ "$branch" == "$main_branch" ]]; then
  echo "ci: applying $specs (apply set $set_name)"
  wrennctl apply -f "$specs" --set "$set_name" --prune --yes
  exit 0
fi

echo "ci: nothing to do for $event on ${branch:-?}"
