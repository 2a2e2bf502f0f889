{{/* Name of the chart, shortened to fit label values. */}}
{{- define "reasonops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of the chart's object names: the release name alone when it already names the chart. */}}
{{- define "reasonops.fullname" -}}
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

{{/* Labels of every object of the chart, less the component. */}}
{{- define "reasonops.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "reasonops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the operator's objects. */}}
{{- define "reasonops.labels" -}}
{{ include "reasonops.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels of the objects that serve workload pods (their ServiceAccount and Role). */}}
{{- define "reasonops.workloadLabels" -}}
{{ include "reasonops.commonLabels" . }}
app.kubernetes.io/component: workload
{{- end }}

{{/* Labels that select the operator pod; never changed by an upgrade (selectors are immutable). */}}
{{- define "reasonops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reasonops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "reasonops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "reasonops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from one entry of .Values.images; call with (list $ "curate"). A tag of
the form sha256:<digest> pins the image by digest. */}}
{{- define "reasonops.image" -}}
{{- $root := index . 0 }}
{{- $image := index $root.Values.images (index . 1) }}
{{- $tag := default $root.Chart.AppVersion $image.tag }}
{{- printf "%s%s%s" $image.repository (ternary "@" ":" (hasPrefix "sha256:" $tag)) $tag }}
{{- end }}

{{/* Namespaces where workload pods run and so need the workload ServiceAccount, as a JSON list. */}}
{{- define "reasonops.workloadNamespaces" -}}
{{- $all := concat (list .Release.Namespace) .Values.watchNamespaces .Values.workloadServiceAccount.extraNamespaces }}
{{- $all | uniq | toJson }}
{{- end }}

{{/* The pull policy of workload pods: the operator applies one policy to every workload image. */}}
{{- define "reasonops.workloadPullPolicy" -}}
{{- $policies := list }}
{{- range $name := list "curate" "train" "eval" "serve" }}
{{- $policies = append $policies (index $.Values.images $name).pullPolicy }}
{{- end }}
{{- if gt (len ($policies | uniq)) 1 }}
{{- fail (printf "images.{curate,train,eval,serve}.pullPolicy must be equal (the operator applies one pull policy to every workload pod); got %s" (join ", " $policies)) }}
{{- end }}
{{- first $policies }}
{{- end }}

{{/*
What the operator does in a namespace it watches, verb by verb (controller/handlers.py, kube.py):
kopf lists and watches the three kinds and the children it indexes (Jobs, Pods, Deployments);
reconciles write only /status, never the spec. Children are created once (POST), Jobs are
(un)suspended by patch, the eval server is server-side applied (patch; create when it is new),
old revisions go by label selector (deletecollection) and the server Deployment by name. kopf
posts core/v1 Events. Kueue's Workloads are watched for why a queued Job waits, and patched
(spec.active) to suspend and resume a queued Job through Kueue. No get: the operator reads the
world from its watches only.
*/}}
{{- define "reasonops.operatorRules" -}}
- apiGroups: [reasonops.io]
  resources: [reasoningdatasets, finetunejobs, evalruns]
  verbs: [list, watch]
- apiGroups: [reasonops.io]
  resources: [reasoningdatasets/status, finetunejobs/status, evalruns/status]
  verbs: [patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, patch, deletecollection]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [pods/eviction]
  verbs: [create]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [create, patch, deletecollection]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [create, deletecollection]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create, patch, deletecollection]
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [list, watch, patch]
{{- end }}
