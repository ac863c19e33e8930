#!/usr/bin/env bash
# Copy into the Helm chart the files it ships but does not own:
#
#   crds/modelrollout.io_modelrollouts.yaml -> charts/modelrollout-operator/crds/modelrollout.io_modelrollouts.yaml
#   crds/kopf-peering.yaml                  -> charts/modelrollout-operator/crds/peerings.kopf.dev.yaml (*)
#   docs/grafana-dashboard.json             -> charts/modelrollout-operator/dashboards/modelrollout-operator.json
#
# Helm can only package files inside the chart's folder, hence the copies.
# (*) `helm show crds` prints the crds/ files one after the other with no
# document separator, so the peering CRDs get a leading `---` and a name that
# sorts after the ModelRollout CRD's: `helm show crds | kubectl apply -f -`
# then reads a valid YAML stream. Every other copy is byte for byte.
#
# `make crds` runs this after regenerating the CRD; tests/unit/test_chart.py
# fails when a copy differs from its source.
#
# Usage: hack/sync-chart-crds.sh          copy
#        hack/sync-chart-crds.sh --check  exit 1 (and say which) if a copy differs
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chart="charts/modelrollout-operator"
# source:destination:mode (copy = byte for byte; separated = "---" + header first)
pairs=(
  "crds/modelrollout.io_modelrollouts.yaml:${chart}/crds/modelrollout.io_modelrollouts.yaml:copy"
  "crds/kopf-peering.yaml:${chart}/crds/peerings.kopf.dev.yaml:separated"
  "docs/grafana-dashboard.json:${chart}/dashboards/modelrollout-operator.json:copy"
)

check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

[[ -d "${root}/${chart}" ]] || { echo "error: no chart at ${root}/${chart}" >&2; exit 2; }

tmp="$(mktemp)"
trap 'rm -f "${tmp}"' EXIT

stale=0
for pair in "${pairs[@]}"; do
  IFS=: read -r src dst mode <<<"${pair}"
  [[ -f "${root}/${src}" ]] || { echo "error: ${root}/${src} is missing" >&2; exit 2; }
  case "${mode}" in
    copy) cp "${root}/${src}" "${tmp}" ;;
    separated)
      {
        printf -- '---\n'
        printf '# Copied from %s by hack/sync-chart-crds.sh. Do not edit.\n' "${src}"
        cat "${root}/${src}"
      } >"${tmp}"
      ;;
  esac
  if cmp -s "${tmp}" "${root}/${dst}"; then
    continue
  fi
  if ${check}; then
    echo "out of date: ${dst} differs from ${src} (run hack/sync-chart-crds.sh)" >&2
    stale=1
  else
    mkdir -p "$(dirname "${root}/${dst}")"
    cp "${tmp}" "${root}/${dst}"
    echo "[sync] ${src} -> ${dst}" >&2
  fi
done
exit "${stale}"
