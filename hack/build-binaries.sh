#!/usr/bin/env bash
# Build (or reuse) every binary the local environment needs, from Go modules,
# into a cache folder outside the clone:
#
#   ${MODELROLLOUT_CACHE:-~/.cache/modelrollout}/bin/<name>-<version>/<name>
#   (helm: <name>-<version>-<HELM_BUILD>/, the tag naming its build flags)
#
# A warm run finds every binary and builds nothing. A cold run on 2 cores takes
# roughly half an hour, most of it kube-apiserver and kube-controller-manager;
# KServe's controller adds about 18 minutes (measured at -p=1 on 2 busy cores).
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod points the staging
# modules (k8s.io/api, k8s.io/apiserver, ...) at ./staging with replace lines.
# We build it from a wrapper module of our own that requires k8s.io/kubernetes
# and replaces each staging module with its published v0.X.Y twin; the list of
# staging modules is read from upstream's own go.mod, so it stays right when
# the version changes. etcd's server module has the same kind of replace lines
# and gets the same treatment.
#
# KServe's controller (cmd/manager) has the same problem in small: its go.mod
# pins controller-runtime with a replace line, which `go install` refuses. The
# wrapper module copies every replace line of upstream's go.mod. Its CRDs
# (config/crd/full) come with the `crds` component, so the API server can
# validate InferenceServices even where the controller is not built.
#
# Usage: hack/build-binaries.sh [component ...]
#   components: kube etcd kwok helm crds kserve flagger (default: all but flagger)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${here}/versions.env"

CACHE="${MODELROLLOUT_CACHE:-${HOME}/.cache/modelrollout}"
BIN="${CACHE}/bin"
WORK="${CACHE}/build"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED=0
export GOTOOLCHAIN=local
mkdir -p "${BIN}" "${WORK}"

log() { printf '\033[1m[binaries]\033[0m %s\n' "$*" >&2; }

need_go() {
  command -v go >/dev/null || {
    echo "error: Go is needed to build the local environment's binaries." >&2
    echo "       Install Go 1.26+ (https://go.dev/doc/install), or point" >&2
    echo "       KUBEBUILDER_ASSETS at a folder holding etcd, kube-apiserver," >&2
    echo "       kube-controller-manager, kube-scheduler, kubectl, kwok and helm." >&2
    exit 2
  }
}

have() { [[ -x "${BIN}/$1-$2/$1" ]]; }

build_kube() {
  local v="${KUBERNETES_VERSION}" names=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local missing=()
  for n in "${names[@]}"; do have "$n" "$v" || missing+=("$n"); done
  if [[ ${#missing[@]} -eq 0 ]]; then log "kubernetes ${v}: cached"; return; fi
  need_go
  local mod="${WORK}/kubernetes-${v}"
  mkdir -p "${mod}"
  log "kubernetes ${v}: reading upstream go.mod"
  local upstream
  upstream="$(cd "${mod}" && go mod download -json "k8s.io/kubernetes@${v}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  local minor="${v#v1.}"; minor="${minor%%.*}"
  local staging_version="v0.${v#v1.}"
  {
    echo "module modelrollout.local/kubernetes-binaries"
    echo
    grep -E '^go [0-9]' "${upstream}"
    grep -E '^godebug' "${upstream}" || true
    echo
    echo "require k8s.io/kubernetes ${v}"
    echo
    # Every `k8s.io/X => ./staging/src/k8s.io/X` becomes `k8s.io/X => k8s.io/X v0.Y.Z`.
    grep -E '^\s*k8s\.io/[^ ]+ => \./staging/' "${upstream}" \
      | awk -v sv="${staging_version}" '{print "replace " $1 " => " $1 " " sv}'
  } > "${mod}/go.mod"
  cat > "${mod}/tools.go" <<GO
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  log "kubernetes ${v}: resolving modules ($(grep -c '^replace' "${mod}/go.mod") staging replacements)"
  (cd "${mod}" && go mod tidy)
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X ${pkg}.gitVersion=${v} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    ld+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
  done
  for n in "${missing[@]}"; do
    log "kubernetes ${v}: building ${n}"
    mkdir -p "${BIN}/${n}-${v}"
    (cd "${mod}" && go build -trimpath -tags selinux,notest -ldflags "${ld}" \
      -o "${BIN}/${n}-${v}/${n}.tmp" "k8s.io/kubernetes/cmd/${n}")
    mv "${BIN}/${n}-${v}/${n}.tmp" "${BIN}/${n}-${v}/${n}"
  done
}

build_etcd() {
  local v="${ETCD_VERSION}"
  if have etcd "$v"; then log "etcd ${v}: cached"; return; fi
  need_go
  local mod="${WORK}/etcd-${v}"
  mkdir -p "${mod}"
  cat > "${mod}/go.mod" <<MOD
module modelrollout.local/etcd-binary

go 1.26

require go.etcd.io/etcd/server/v3 ${v}
MOD
  cat > "${mod}/tools.go" <<GO
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  log "etcd ${v}: resolving modules"
  (cd "${mod}" && go mod tidy)
  log "etcd ${v}: building"
  mkdir -p "${BIN}/etcd-${v}"
  (cd "${mod}" && go build -trimpath -ldflags "-s -w" -o "${BIN}/etcd-${v}/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "${BIN}/etcd-${v}/etcd.tmp" "${BIN}/etcd-${v}/etcd"
}

go_install() { # name version module/path [ldflags] [cache tag]
  # The cache tag names the build recipe: bump it when the flags change, so a
  # binary built the old way is not found and is rebuilt.
  local n="$1" v="$2" pkg="$3" dir="$2${5:+-$5}"
  if have "$n" "$dir"; then log "${n} ${dir}: cached"; return; fi
  need_go
  log "${n} ${dir}: building"
  mkdir -p "${BIN}/${n}-${dir}"
  GOBIN="${BIN}/${n}-${dir}" go install -trimpath -ldflags "-s -w ${4:-}" "${pkg}@${v}"
}

helm_ldflags() {
  # What helm's own Makefile sets at release time, read from the module itself:
  # - internal/version: the version `helm version` reports (a tagged release has
  #   no build metadata) and a clean tree;
  # - chartutil and lint/rules k8sVersionMajor/Minor: the Kubernetes version helm
  #   assumes when it renders without a cluster (`helm template`, `--dry-run=client`,
  #   `helm lint`). Left unset it is v1.20, and a chart with `kubeVersion: >=1.25`
  #   refuses to render. Upstream derives it from the k8s.io/client-go module it
  #   was built with (v0.X.Y means Kubernetes 1.X); so do we.
  local v="$1" gomod client_go major minor
  need_go
  gomod="$(cd "${WORK}" && GOFLAGS= go mod download -json "helm.sh/helm/v3@${v}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  client_go="$(awk '$1 == "k8s.io/client-go" {print $2; exit}' "${gomod}")"
  [[ "${client_go}" =~ ^v0\.([0-9]+)\. ]] || { echo "cannot read k8s.io/client-go from ${gomod}" >&2; exit 2; }
  major=1 minor="${BASH_REMATCH[1]}"
  local ld="-X helm.sh/helm/v3/internal/version.version=${v}"
  ld+=" -X helm.sh/helm/v3/internal/version.metadata="
  ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld+=" -X ${pkg}.k8sVersionMajor=${major} -X ${pkg}.k8sVersionMinor=${minor}"
  done
  printf '%s' "${ld}"
}

fetch_crds() {
  # The upstream CRDs ship inside Go modules; `go mod download` brings them
  # through the module proxy like any module.
  local dst="${CACHE}/crds"
  mkdir -p "${dst}"
  if [[ ! -s "${dst}/gateway-api-${GATEWAY_API_VERSION}.yaml" ]]; then
    need_go
    log "gateway-api ${GATEWAY_API_VERSION}: downloading CRDs"
    local dir
    dir="$(cd "${WORK}" && GOFLAGS= go mod download -json "sigs.k8s.io/gateway-api@${GATEWAY_API_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    for f in "${dir}"/config/crd/standard/*.yaml; do cat "$f"; echo "---"; done > "${dst}/gateway-api-${GATEWAY_API_VERSION}.yaml.tmp"
    mv "${dst}/gateway-api-${GATEWAY_API_VERSION}.yaml.tmp" "${dst}/gateway-api-${GATEWAY_API_VERSION}.yaml"
  else log "gateway-api ${GATEWAY_API_VERSION}: cached"; fi
  if [[ ! -s "${dst}/istio-${ISTIO_API_VERSION}.yaml" ]]; then
    need_go
    log "istio api ${ISTIO_API_VERSION}: downloading CRDs"
    local dir
    dir="$(cd "${WORK}" && GOFLAGS= go mod download -json "istio.io/api@${ISTIO_API_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    cp "${dir}/kubernetes/customresourcedefinitions.gen.yaml" "${dst}/istio-${ISTIO_API_VERSION}.yaml.tmp"
    mv "${dst}/istio-${ISTIO_API_VERSION}.yaml.tmp" "${dst}/istio-${ISTIO_API_VERSION}.yaml"
  else log "istio api ${ISTIO_API_VERSION}: cached"; fi
  if [[ ! -s "${dst}/kserve-${KSERVE_VERSION}.yaml" ]]; then
    need_go
    log "kserve ${KSERVE_VERSION}: downloading CRDs"
    local dir
    dir="$(cd "${WORK}" && GOFLAGS= go mod download -json "github.com/kserve/kserve@${KSERVE_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    # The CRDs of config/crd/full's kustomization (not the LLMInferenceService ones).
    for f in "${dir}"/config/crd/full/serving.kserve.io_*.yaml; do cat "$f"; echo "---"; done > "${dst}/kserve-${KSERVE_VERSION}.yaml.tmp"
    mv "${dst}/kserve-${KSERVE_VERSION}.yaml.tmp" "${dst}/kserve-${KSERVE_VERSION}.yaml"
  else log "kserve ${KSERVE_VERSION}: cached"; fi
}

build_kserve() {
  local v="${KSERVE_VERSION}" n=kserve-manager
  if have "$n" "$v"; then log "kserve ${v}: cached"; return; fi
  need_go
  local mod="${WORK}/kserve-${v}"
  mkdir -p "${mod}"
  log "kserve ${v}: reading upstream go.mod"
  local upstream
  upstream="$(cd "${mod}" && GOFLAGS= go mod download -json "github.com/kserve/kserve@${v}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module modelrollout.local/kserve-binary"
    echo
    grep -E '^go [0-9]' "${upstream}"
    echo
    echo "require github.com/kserve/kserve ${v}"
    echo
    # Single-line replaces (`replace a => b v`) and those inside a block.
    awk '/^replace \(/{inb=1; next} inb && /^\)/{inb=0; next}
         inb && /=>/{print "replace " $0; next} /^replace [^(]/{print}' "${upstream}"
  } > "${mod}/go.mod"
  cat > "${mod}/tools.go" <<GO
//go:build tools

package tools

import _ "github.com/kserve/kserve/cmd/manager"
GO
  log "kserve ${v}: resolving modules ($(grep -c '^replace' "${mod}/go.mod") replacements)"
  (cd "${mod}" && go mod tidy)
  log "kserve ${v}: building the controller (cmd/manager)"
  mkdir -p "${BIN}/${n}-${v}"
  (cd "${mod}" && go build -trimpath -ldflags "-s -w" -o "${BIN}/${n}-${v}/${n}.tmp" github.com/kserve/kserve/cmd/manager)
  mv "${BIN}/${n}-${v}/${n}.tmp" "${BIN}/${n}-${v}/${n}"
}

build_one() {
  case "$1" in
    kube) build_kube ;;
    etcd) build_etcd ;;
    kwok) go_install kwok "${KWOK_VERSION}" sigs.k8s.io/kwok/cmd/kwok ;;
    helm)
      if have helm "${HELM_VERSION}-${HELM_BUILD}"; then log "helm ${HELM_VERSION}-${HELM_BUILD}: cached"
      else go_install helm "${HELM_VERSION}" helm.sh/helm/v3/cmd/helm "$(helm_ldflags "${HELM_VERSION}")" "${HELM_BUILD}"; fi ;;
    crds) fetch_crds ;;
    kserve) build_kserve ;;
    # Flagger (for make bench-flagger only, so not in the default list): its go.mod
    # has no replace lines, so a plain `go install` of cmd/flagger works.
    flagger) go_install flagger "${FLAGGER_VERSION}" github.com/fluxcd/flagger/cmd/flagger ;;
    *) echo "unknown component: $1 (kube etcd kwok helm crds kserve flagger)" >&2; return 2 ;;
  esac
}

components=("$@")
[[ ${#components[@]} -eq 0 ]] && components=(crds etcd kwok helm kube kserve)
# Components build side by side: module downloads, linking and the small builds fill
# the gaps the big compiles leave on the cores (the Go cache takes concurrent builds).
# Each writes its own log; a failure prints that log and fails the whole run.
logs="$(mktemp -d)"
pids=()
for c in "${components[@]}"; do
  ( build_one "$c" ) >"${logs}/$c.log" 2>&1 &
  pids+=("$!")
done
failed=()
for i in "${!components[@]}"; do
  c="${components[$i]}"
  if wait "${pids[$i]}"; then
    grep -h '\[binaries\]' "${logs}/$c.log" >&2 || true
  else
    failed+=("$c")
    echo "----- ${c} failed; its log:" >&2
    tail -n 60 "${logs}/$c.log" >&2
  fi
done
rm -rf "${logs}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "error: building ${failed[*]} failed (see above)" >&2
  exit 1
fi
log "binaries in ${BIN}"
