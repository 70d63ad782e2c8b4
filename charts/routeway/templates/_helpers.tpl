{{/* Names and labels shared by every template. */}}

{{- define "routeway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name; truncated so that suffixes such as "-metrics" still fit 63 characters. */}}
{{- define "routeway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "routeway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "routeway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "routeway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
Labels of the objects that are not part of the operator itself (dashboard, default gateway,
network policies): each adds its own app.kubernetes.io/component, so none of them looks like
the operator's pods to a selector.
*/}}
{{- define "routeway.releaseLabels" -}}
helm.sh/chart: {{ include "routeway.chart" . }}
app.kubernetes.io/name: {{ include "routeway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: routeway
{{- end -}}

{{- define "routeway.labels" -}}
helm.sh/chart: {{ include "routeway.chart" . }}
{{ include "routeway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: routeway
{{- end -}}

{{- define "routeway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "routeway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "routeway.peeringName" -}}
{{- default (include "routeway.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/* repository:tag, or repository@sha256:... when the tag is a digest. */}}
{{- define "routeway.imageRef" -}}
{{- $repository := index . 0 -}}
{{- $tag := index . 1 -}}
{{- if hasPrefix "sha256:" $tag -}}
{{- printf "%s@%s" $repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "routeway.image" -}}
{{- include "routeway.imageRef" (list .Values.image.repository (default .Chart.AppVersion .Values.image.tag)) -}}
{{- end -}}

{{/* The proxy image defaults, field by field, to the operator's image. */}}
{{- define "routeway.proxyImage" -}}
{{- $repository := default .Values.image.repository .Values.proxy.image.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.proxy.image.tag -}}
{{- include "routeway.imageRef" (list $repository $tag) -}}
{{- end -}}

{{/*
Permissions the operator needs inside every namespace it serves. The same rules form the
ClusterRole (all namespaces) or one Role per watched namespace, so both modes grant the same.
No wildcards: each resource and verb is listed because the operator uses it.
*/}}
{{- define "routeway.operatorRules" -}}
# Its own resources: watched, annotated/finalized by kopf (patch), never created or deleted.
- apiGroups: [routeway.dev]
  resources: [modelgateways, modelroutes, modelbackends, modelclients]
  verbs: [get, list, watch, patch]
# Conditions and observedGeneration: the status subresource is the only place it writes.
- apiGroups: [routeway.dev]
  resources: [modelgateways/status, modelroutes/status, modelbackends/status, modelclients/status]
  verbs: [patch]
# Children carry ownerReferences with blockOwnerDeletion (kopf.adopt's default); clusters that
# enforce OwnerReferencesPermissionEnforcement require update on the owner's finalizers. A
# gateway owns its proxy objects, a route its revisions (ControllerRevisions).
- apiGroups: [routeway.dev]
  resources: [modelgateways/finalizers, modelroutes/finalizers]
  verbs: [update]
# Referenced upstream/client credentials are read; each gateway's resolved credentials Secret
# is written. The proxy Roles it creates grant get/list/watch on configmaps and secrets, which
# the API server only allows (escalation check) because the operator holds them itself.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
# Per-gateway children: rendered config, Service, the proxy's ServiceAccount.
- apiGroups: [""]
  resources: [configmaps, services, serviceaccounts]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
# Route revisions for rollouts: one ControllerRevision per revision, pruned to the history.
- apiGroups: [apps]
  resources: [controllerrevisions]
  verbs: [get, list, watch, create, patch, delete]
# Rollout analysis and status.proxies: the gateways' ready proxy pods are listed, then read on
# their admin port (the NetworkPolicy lets the operator's pods in).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
# The proxy's Role and RoleBinding (read only its own ConfigMap and Secret).
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, patch, delete]
# Events a user should notice (invalid route, missing backend, config applied).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/* Namespace of the chart's ModelGateway. */}}
{{- define "routeway.defaultGatewayNamespace" -}}
{{- default .Release.Namespace .Values.defaultGateway.namespace -}}
{{- end -}}

{{/*
Namespaces that get a NetworkPolicy for the proxy pods, as a JSON list: networkPolicy.namespaces,
or else where gateways can run: the watched namespaces (the release namespace when the operator
serves all of them) plus the chart's own gateway's namespace.
*/}}
{{- define "routeway.networkPolicyNamespaces" -}}
{{- $namespaces := .Values.networkPolicy.namespaces -}}
{{- if not $namespaces -}}
{{- $namespaces = default (list .Release.Namespace) .Values.watchNamespaces -}}
{{- if .Values.defaultGateway.enabled -}}
{{- $namespaces = append $namespaces (include "routeway.defaultGatewayNamespace" .) -}}
{{- end -}}
{{- end -}}
{{- uniq $namespaces | toJson -}}
{{- end -}}
