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

{{/* Security contexts from values (podSecurityContext, containerSecurityContext): a key set to
     null in the user's values is dropped, so OpenShift's restricted SCC can assign the uid. */}}
{{- define "envdr.containerSecurityContext" -}}
{{- with .Values.containerSecurityContext -}}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* Pod-level settings every pod of the release shares: the security context, pull secrets,
     priority class. */}}
{{- define "envdr.podCommon" -}}
automountServiceAccountToken: false
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* The environment of every envdr container: AWS_REGION, then extraEnv. */}}
{{- define "envdr.env" -}}
- name: AWS_REGION
  value: {{ .Values.region | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
envdr.apiEnabled: "true" when an object of a CRD's API renders. The value is auto (only when the
cluster serves the API: .Capabilities on install, --api-versions with helm template), true
(always: the CRDs are known to exist, e.g. a GitOps render without a cluster) or false (never).
Args: (list $ value "group/version" "Kind").
*/}}
{{- define "envdr.apiEnabled" -}}
{{- $ := index . 0 }}{{- $v := toString (index . 1) }}{{- $gv := index . 2 }}{{- $kind := index . 3 }}
{{- if eq $v "true" -}}
true
{{- else if eq $v "auto" -}}
{{- if or ($.Capabilities.APIVersions.Has $gv) ($.Capabilities.APIVersions.Has (printf "%s/%s" $gv $kind)) -}}
true
{{- end -}}
{{- else if ne $v "false" -}}
{{- fail (printf "%s: %q: use auto, true or false" $kind $v) -}}
{{- end -}}
{{- end -}}

{{- define "envdr.kedaEnabled" -}}
{{- include "envdr.apiEnabled" (list . .Values.keda.enabled "keda.sh/v1alpha1" "ScaledObject") -}}
{{- end -}}

{{/*
envdr.configRegion: this release's entry of config.content's regions, as YAML ("" when the config
comes from an existing secret). Fails when the config does not list the release's region: the
daemon could not start.
*/}}
{{- define "envdr.configRegion" -}}
{{- if .Values.config.create -}}
{{- $c := fromYaml (required "config.content is required when config.create is true" .Values.config.content) -}}
{{- if hasKey $c "Error" -}}
{{- fail (printf "config.content is not YAML: %s" (get $c "Error")) -}}
{{- end -}}
{{- $entry := dict -}}
{{- $names := list -}}
{{- range (get $c "regions" | default list) -}}
{{- $names = append $names (get . "name") -}}
{{- if eq (toString (get . "name")) $.Values.region -}}
{{- $entry = . -}}
{{- end -}}
{{- end -}}
{{- if not $entry -}}
{{- fail (printf "region %s is not one of config.content's regions (%s): one release per configured region" $.Values.region (join ", " $names)) -}}
{{- end -}}
{{- $q := get $entry "queue_url" | default "" | toString -}}
{{- if and (not $q) (eq (toString (get $c "home_region")) $.Values.region) -}}
{{- $q = get $c "queue_url" | default "" | toString -}}
{{- end -}}
{{- toYaml (dict "name" (get $entry "name") "queue_url" $q) -}}
{{- end -}}
{{- end -}}

{{/*
envdr.queueURL: the queue KEDA reads, this region's. With the config in a ConfigMap it is the
config's queue for the region (regions[].queue_url, or queue_url for the home region), and a
keda.queueURL that differs fails; with an existing secret keda.queueURL is required. Either way
its host must name the region (sqs.REGION.amazonaws.com, REGION.queue.amazonaws.com, or a VPC
endpoint's ...sqs.REGION.vpce.amazonaws.com), so one region's release never scales on
another's queue.
*/}}
{{- define "envdr.queueURL" -}}
{{- $url := .Values.keda.queueURL -}}
{{- if .Values.config.create -}}
{{- $r := include "envdr.configRegion" . | fromYaml -}}
{{- if not $r.queue_url -}}
{{- fail (printf "config.content names no queue for region %s: set its regions[].queue_url (or keda.enabled false)" .Values.region) -}}
{{- end -}}
{{- if and $url (ne $url $r.queue_url) -}}
{{- fail (printf "keda.queueURL %s is not region %s's queue in config.content (%s): leave keda.queueURL empty to use the config's" $url .Values.region $r.queue_url) -}}
{{- end -}}
{{- $url = $r.queue_url -}}
{{- end -}}
{{- if not $url -}}
{{- fail (printf "keda.queueURL is required when the config comes from config.existingSecret: region %s's events queue" .Values.region) -}}
{{- end -}}
{{- $host := (urlParse $url).host -}}
{{- if not (has .Values.region (splitList "." $host)) -}}
{{- fail (printf "keda.queueURL %s is not a queue in region %s (its host %q does not name the region)" $url .Values.region $host) -}}
{{- end -}}
{{- $url -}}
{{- end -}}

{{/* The drill reports' claim: drill.reports.persistence.existingClaim or the chart's own. */}}
{{- define "envdr.drillReportsClaim" -}}
{{- default (printf "%s-drill-reports" (include "envdr.fullname" .)) .Values.drill.reports.persistence.existingClaim -}}
{{- end -}}

{{/* The sharded scan's run: scan.runId or r<revision>. */}}
{{- define "envdr.scanRun" -}}
{{- default (printf "r%d" (int .Release.Revision)) .Values.scan.runId | lower -}}
{{- end -}}

{{- define "envdr.scanReportsClaim" -}}
{{- default (printf "%s-scan-reports" (include "envdr.fullname" .)) .Values.scan.reports.persistence.existingClaim -}}
{{- end -}}
