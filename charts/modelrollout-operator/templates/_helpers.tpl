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

{{/*
The rules the operator needs on the objects of a namespace, shared by the
ClusterRole (all namespaces) and the per-namespace Roles. Each one is used by
the code named in its comment; nothing else is granted.
*/}}
{{- define "modelrollout.namespacedRules" -}}
# No rule on Secrets, on purpose: the Prometheus credentials are mounted as
# files by the kubelet, which reads the Secret with its own identity, so the
# operator needs no API access to Secrets (and must not have it: it would see
# every Secret of every watched namespace).
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
{{- if .Values.rbac.trafficRouters.gatewayAPI }}
# Gateway API router: read the HTTPRoute, patch its backend weights and mirror.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "patch"]
{{- end }}
{{- if .Values.rbac.trafficRouters.istio }}
# Istio router: read the VirtualService, patch its route weights and mirror.
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "patch"]
{{- end }}
{{- if .Values.rbac.trafficRouters.service }}
# Plain Service router: read and re-point the Service's selector.
- apiGroups: [""]
  resources: ["services"]
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
