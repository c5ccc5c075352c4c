{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "imagestreams.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "imagestreams.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "imagestreams.webhook.fullname" -}}
{{- printf "%s-webhook" (include "imagestreams.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "imagestreams.controller.fullname" -}}
{{- printf "%s-controller" (include "imagestreams.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "imagestreams.certsSync.fullname" -}}
{{- printf "%s-certs-sync" (include "imagestreams.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret holding tls.crt/tls.key/ca.crt, in both certificate modes. */}}
{{- define "imagestreams.tlsSecret" -}}
{{- printf "%s-webhook-tls" (include "imagestreams.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The MutatingWebhookConfiguration (cluster-scoped: the release name keeps it unique). */}}
{{- define "imagestreams.webhookConfiguration" -}}
{{- include "imagestreams.fullname" . -}}
{{- end -}}

{{- define "imagestreams.leaseName" -}}
{{- default (include "imagestreams.controller.fullname" .) .Values.controller.leaderElection.leaseName -}}
{{- end -}}

{{- define "imagestreams.serviceAccountName" -}}
{{- $sa := index .ctx.Values .component "serviceAccount" -}}
{{- if $sa.create -}}
{{- default (include (printf "imagestreams.%s.fullname" .component) .ctx) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* DNS names of the webhook Service; the API server dials <svc>.<ns>.svc. */}}
{{- define "imagestreams.webhook.dnsNames" -}}
{{- $svc := include "imagestreams.webhook.fullname" . -}}
- {{ printf "%s.%s.svc" $svc .Release.Namespace }}
- {{ printf "%s.%s.svc.%s" $svc .Release.Namespace .Values.clusterDomain }}
- {{ printf "%s.%s" $svc .Release.Namespace }}
- {{ $svc }}
{{- end -}}

{{/* Labels --------------------------------------------------------------------------- */}}

{{- define "imagestreams.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imagestreams.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component | kebabcase }}
{{- end -}}

{{/* Call with (dict "ctx" $ "component" "webhook"); component may be empty. */}}
{{- define "imagestreams.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "imagestreams.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . | kebabcase }}
{{- end }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: imagestreams
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pods ----------------------------------------------------------------------------- */}}

{{- define "imagestreams.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* What every pod spec shares: service account, security, scheduling. (dict "ctx" $ "component" "webhook") */}}
{{- define "imagestreams.podSpec" -}}
{{- $values := index .ctx.Values .component -}}
serviceAccountName: {{ include "imagestreams.serviceAccountName" . }}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .ctx.Values.podSecurityContext | nindent 2 }}
{{- with $values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Replicas spread over nodes and zones unless the values say otherwise. */}}
{{- define "imagestreams.topologySpread" -}}
{{- $values := index .ctx.Values .component -}}
{{- if $values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $values.topologySpreadConstraints | nindent 2 }}
{{- else }}
topologySpreadConstraints:
  {{- range list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
  - maxSkew: 1
    topologyKey: {{ . }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "imagestreams.selectorLabels" $ | nindent 8 }}
    matchLabelKeys: [pod-template-hash]
  {{- end }}
{{- end }}
{{- end -}}

{{/* The container's security context and a writable /tmp (the root filesystem is read-only). */}}
{{- define "imagestreams.containerSecurity" -}}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
{{- end -}}

{{- define "imagestreams.tmpVolume" -}}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
{{- end -}}

{{/* certs-sync's arguments, shared by its Deployment and its hook Job. */}}
{{- define "imagestreams.certsSync.args" -}}
- certs-sync
- --log-format={{ .Values.logFormat }}
- --secret={{ .Release.Namespace }}/{{ include "imagestreams.tlsSecret" . }}
- --webhook={{ include "imagestreams.webhookConfiguration" . }}
- --service={{ include "imagestreams.webhook.fullname" . }}
- --namespace={{ .Release.Namespace }}
- --cluster-domain={{ .Values.clusterDomain }}
- --rotate-before={{ .Values.certsSync.rotateBefore }}
{{- include "imagestreams.localRegistry.certsSyncArgs" . }}
{{- end -}}
