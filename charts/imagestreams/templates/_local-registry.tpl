{{/* Reference policy Local: the registry Local tags are mirrored into (docs/local-registry.md).

localRegistry.enabled with localRegistry.external.host empty deploys a CNCF Distribution
registry in the release namespace (local-registry.yaml); with it set, the controller pushes to
that existing registry instead and nothing is deployed. */}}

{{- define "imagestreams.localRegistry.fullname" -}}
{{- printf "%s-registry" (include "imagestreams.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "true" when the chart runs the registry itself, else empty. */}}
{{- define "imagestreams.localRegistry.inChart" -}}
{{- if and .Values.localRegistry.enabled (not .Values.localRegistry.external.host) -}}
true
{{- end -}}
{{- end -}}

{{/* Where the controller pushes to the in-chart registry: its Service. */}}
{{- define "imagestreams.localRegistry.serviceHost" -}}
{{- printf "%s.%s.svc:%d" (include "imagestreams.localRegistry.fullname" .) .Release.Namespace (int .Values.localRegistry.service.port) -}}
{{- end -}}

{{/* The registry as image references name it (what nodes pull from): --local-registry. */}}
{{- define "imagestreams.localRegistry.host" -}}
{{- $r := .Values.localRegistry -}}
{{- if $r.external.host -}}
{{- $r.external.host -}}
{{- else -}}
{{- default (include "imagestreams.localRegistry.serviceHost" .) $r.host -}}
{{- end -}}
{{- end -}}

{{/* DNS names of the in-chart registry's serving certificate: the Service's names, and the
host of localRegistry.host when nodes pull through another name. A YAML list. */}}
{{- define "imagestreams.localRegistry.dnsNames" -}}
{{- $svc := include "imagestreams.localRegistry.fullname" . -}}
{{- $names := list (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.%s" $svc .Release.Namespace .Values.clusterDomain) (printf "%s.%s" $svc .Release.Namespace) $svc -}}
{{- with .Values.localRegistry.host }}
{{- $names = append $names (regexReplaceAll ":[0-9]+$" . "") -}}
{{- end }}
{{- toYaml ($names | uniq) -}}
{{- end -}}

{{/* The kubernetes.io/tls Secret the in-chart registry serves: the user's, cert-manager's
Certificate of its own, or (certs-sync) the webhook's Secret, whose certificate certs-sync
extends with the registry's names (one CA for nodes and the API server to trust). */}}
{{- define "imagestreams.localRegistry.tlsSecret" -}}
{{- if .Values.localRegistry.tls.existingSecret -}}
{{- .Values.localRegistry.tls.existingSecret -}}
{{- else if .Values.certManager.enabled -}}
{{- printf "%s-registry-tls" (include "imagestreams.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- include "imagestreams.tlsSecret" . -}}
{{- end -}}
{{- end -}}

{{/* certs-sync's extra names, for its arguments: only when it issues the registry's certificate. */}}
{{- define "imagestreams.localRegistry.certsSyncArgs" -}}
{{- if and (include "imagestreams.localRegistry.inChart" .) (not .Values.localRegistry.tls.existingSecret) -}}
{{- range (include "imagestreams.localRegistry.dnsNames" . | fromYamlArray) }}
- --dns={{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* The Secret whose ca.crt the controller trusts for the registry (empty: system roots). */}}
{{- define "imagestreams.localRegistry.caSecret" -}}
{{- if include "imagestreams.localRegistry.inChart" . -}}
{{- include "imagestreams.localRegistry.tlsSecret" . -}}
{{- else -}}
{{- .Values.localRegistry.external.caSecret -}}
{{- end -}}
{{- end -}}

{{/* NAMESPACE/NAME of the push (and delete) credentials, from external.secret ([NS/]NAME). */}}
{{- define "imagestreams.localRegistry.pushSecret" -}}
{{- with .Values.localRegistry.external.secret -}}
{{- if contains "/" . -}}
{{- . -}}
{{- else -}}
{{- printf "%s/%s" $.Release.Namespace . -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "imagestreams.localRegistry.caDir" -}}
/var/run/imagestreams/local-registry-ca
{{- end -}}

{{/* The controller's arguments for reference policy Local. */}}
{{- define "imagestreams.localRegistry.controllerArgs" -}}
{{- $r := .Values.localRegistry -}}
# Reference policy Local: mirror Local tags into {{ include "imagestreams.localRegistry.host" . }}.
- --local-registry={{ include "imagestreams.localRegistry.host" . }}
{{- if include "imagestreams.localRegistry.inChart" . }}
{{- if $r.host }}
- --local-registry-endpoint={{ include "imagestreams.localRegistry.serviceHost" . }}
{{- end }}
{{- else if $r.external.insecure }}
- --local-registry-insecure
{{- end }}
{{- if include "imagestreams.localRegistry.caSecret" . }}
- --local-registry-ca={{ include "imagestreams.localRegistry.caDir" . }}/ca.crt
{{- end }}
{{- with include "imagestreams.localRegistry.pushSecret" . }}
- --local-registry-secret={{ . }}
{{- end }}
- --history-limit={{ $r.historyLimit }}
- --mirror-workers={{ $r.mirrorWorkers }}
{{- end -}}

{{/* The controller's volume and mount for the registry's CA (ca.crt only: never a key). */}}
{{- define "imagestreams.localRegistry.caVolumeMount" -}}
- name: local-registry-ca
  mountPath: {{ include "imagestreams.localRegistry.caDir" . }}
  readOnly: true
{{- end -}}

{{- define "imagestreams.localRegistry.caVolume" -}}
- name: local-registry-ca
  secret:
    secretName: {{ include "imagestreams.localRegistry.caSecret" . }}
    defaultMode: 0444
    items:
      - key: ca.crt
        path: ca.crt
{{- end -}}

{{- define "imagestreams.localRegistry.image" -}}
{{- $i := .Values.localRegistry.image -}}
{{- if $i.digest -}}
{{- printf "%s:%s@%s" $i.repository $i.tag $i.digest | replace ":@" "@" -}}
{{- else -}}
{{- printf "%s:%s" $i.repository $i.tag -}}
{{- end -}}
{{- end -}}

{{/* The registry's configuration (mounted read-only; REGISTRY_* env vars override it). */}}
{{- define "imagestreams.localRegistry.config" -}}
version: 0.1
log:
  level: {{ .Values.localRegistry.logLevel }}
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  # No in-memory blob descriptor cache: `registry garbage-collect` runs as another process,
  # and a stale cache could still report a blob it deleted as present.
http:
  addr: :5000
  tls:
    certificate: /etc/registry/tls/tls.crt
    key: /etc/registry/tls/tls.key
    minimumtls: tls1.2
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
{{- end -}}
