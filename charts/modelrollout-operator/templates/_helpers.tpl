{{/* Name of the chart, overridable. */}}
{{- define "modelrollout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already holds the chart name. */}}
{{- define "modelrollout.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "modelrollout.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelrollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelrollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "modelrollout.labels" -}}
helm.sh/chart: {{ include "modelrollout.chart" . }}
{{ include "modelrollout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelrollout
{{- end }}

{{- define "modelrollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelrollout.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modelrollout.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Several replicas share the work through kopf peering; one acts at a time. */}}
{{- define "modelrollout.peering" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end }}
{{- end }}

{{- define "modelrollout.peeringName" -}}
{{- default (include "modelrollout.fullname" .) .Values.peering.name }}
{{- end }}

{{/* The peering objects: one per shard (the operator appends -shard-<i> to --peering). */}}
{{- define "modelrollout.peeringNames" -}}
{{- $name := include "modelrollout.peeringName" . }}
{{- $shards := int .Values.shards }}
{{- if gt $shards 1 }}
{{- range $i := until $shards }}{{ printf "%s-shard-%d" $name $i }} {{ end }}
{{- else }}{{ $name }}{{ end }}
{{- end }}

{{/* The name of shard <shard>'s Deployment (and budget): the full name when there is one shard. */}}
{{- define "modelrollout.shardName" -}}
{{- $full := include "modelrollout.fullname" .root }}
{{- if gt (int .root.Values.shards) 1 }}
{{- printf "%s-shard-%d" ($full | trunc 55 | trimSuffix "-") (int .shard) }}
{{- else }}{{ $full }}{{ end }}
{{- end }}

{{/* The route kinds the operator watches: the routers RBAC lets it drive. */}}
{{- define "modelrollout.watchRoutes" -}}
{{- $r := .Values.rbac.trafficRouters }}
{{- $kinds := list }}
{{- if $r.gatewayAPI }}{{ $kinds = append $kinds "gatewayAPI" }}{{ end }}
{{- if $r.istio }}{{ $kinds = append $kinds "istio" }}{{ end }}
{{- if $r.service }}{{ $kinds = append $kinds "service" }}{{ end }}
{{- if $kinds }}{{ join "," $kinds }}{{ else }}none{{ end }}
{{- end }}

{{/*
The rules the operator needs on the objects of a namespace, shared by the
ClusterRole (all namespaces) and the per-namespace Roles. Each one is used by
the code named in its comment; nothing else is granted.
*/}}
{{- define "modelrollout.namespacedRules" -}}
# No rule on Secrets but one, on purpose: the Prometheus credentials and the
# default notification receivers are mounted as files by the kubelet, which
# reads those Secrets with its own identity, so the operator needs no API
# access to them (and must not have it: it would see every Secret of every
# watched namespace). The one exception is below: `get` on the Secret named
# modelrollout-notifications only (resourceNames), never list or watch.
#
# The ModelRollouts themselves. kopf lists and watches them, and patches them
# for its finalizer and its annotations (progress, last-handled configuration).
# kopf never reads one object by name (the watch stream carries every object),
# so there is no `get`.
- apiGroups: ["modelrollout.io"]
  resources: ["modelrollouts"]
  verbs: ["list", "watch", "patch"]
# The status: one merge patch per reconcile (operator/kube.py KubeStatusWriter).
- apiGroups: ["modelrollout.io"]
  resources: ["modelrollouts/status"]
  verbs: ["patch"]
# Events on the ModelRollouts (operator/kube.py KubeEventSink; kopf's own event
# posting is switched off). Created only, never read back.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- if .Values.rbac.notificationsSecret }}
# Notifications: a rollout's receivers name keys of one Secret with a fixed
# name in its own namespace (written by the namespace's admin, who chooses the
# URLs and signing keys). `get` on that name only; no list, no watch, no other
# Secret.
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: ["modelrollout-notifications"]
  verbs: ["get"]
{{- end }}
{{- if .Values.rbac.trafficRouters.gatewayAPI }}
# Gateway API router: read the HTTPRoute, patch its backend weights and mirror;
# list and watch them, so that a hand edit wakes its rollout, which restores it.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- if .Values.rbac.trafficRouters.istio }}
# Istio router: read the VirtualService, patch its route weights and mirror;
# list and watch them (a hand edit wakes its rollout).
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- if .Values.rbac.trafficRouters.service }}
# Plain Service router: read and re-point the Service's selector. Services are
# listed and watched: a hand edit of the selector wakes its rollout.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- if .Values.rbac.trafficRouters.kserve }}
# KServe router (traffic/kserve.py): read the InferenceService and patch its
# predictor's canaryTrafficPercent and templated fields. Not watched: a hand
# edit is noticed at the rollout's next reconcile (--tick/--resync).
- apiGroups: ["serving.kserve.io"]
  resources: ["inferenceservices"]
  verbs: ["get", "patch"]
{{- end }}
{{- if or .Values.rbac.trafficRouters.service .Values.rbac.scaleDown }}
# The plain Service router's replica ratio, and blue-green's scale-down of the
# old version after scaleDownDelay (traffic/workloads.py): read the Deployments
# (read-only) and patch their scale subresource (not the Deployments themselves).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
{{- end }}
{{- end }}
