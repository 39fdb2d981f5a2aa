{{/* Name of every object of this release: envdr-REGION unless the release name says more. */}}
{{- define "envdr.fullname" -}}
{{- if contains .Values.region .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Values.region | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "envdr.selectorLabels" -}}
app.kubernetes.io/name: envdr
app.kubernetes.io/instance: {{ .Release.Name }}
envdr.dev/region: {{ required "region is required (one release per region)" .Values.region }}
{{- end -}}

{{- define "envdr.labels" -}}
{{ include "envdr.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "envdr.serviceAccountName" -}}
{{- default (include "envdr.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The drills' own service account (envdr-REGION-drill): the drill role, not the daemon's. */}}
{{- define "envdr.drillServiceAccountName" -}}
{{- default (printf "%s-drill" (include "envdr.fullname" .)) .Values.drill.serviceAccount.name -}}
{{- end -}}

{{- define "envdr.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* checksum of the config, so a change rolls the pods */}}
{{- define "envdr.configChecksum" -}}
{{- if .Values.config.create -}}
{{- .Values.config.content | sha256sum -}}
{{- else -}}
{{- printf "%s/%s/%s" .Values.config.existingSecret .Values.config.existingSecretKey .Values.config.version | sha256sum -}}
{{- end -}}
{{- end -}}

{{- define "envdr.configVolume" -}}
- name: config
{{- if .Values.config.create }}
  configMap:
    name: {{ include "envdr.fullname" . }}-config
{{- else }}
  secret:
    secretName: {{ required "config.existingSecret is required when config.create is false" .Values.config.existingSecret }}
    items:
      - key: {{ .Values.config.existingSecretKey }}
        path: envdr.yaml
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{- define "envdr.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "envdr.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}
