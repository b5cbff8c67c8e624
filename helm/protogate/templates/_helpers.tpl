{{/* Names: the release's full name, truncated to the 63 characters a DNS label allows. */}}
{{- define "protogate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "protogate.fullname" -}}
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

{{- define "protogate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "protogate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "protogate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "protogate.labels" -}}
helm.sh/chart: {{ include "protogate.chart" . }}
{{ include "protogate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "protogate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "protogate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "protogate.image" -}}
{{- $image := .Values.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository ($image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The name of the ConfigMap holding the descriptors, for the sources that mount one. */}}
{{- define "protogate.descriptorsConfigMap" -}}
{{- if eq .Values.descriptors.source "configMap" }}
{{- required "descriptors.existingConfigMap is required with descriptors.source=configMap" .Values.descriptors.existingConfigMap }}
{{- else }}
{{- printf "%s-descriptors" (include "protogate.fullname" . | trunc 51 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{/* The descriptor files passed as --descriptor-set, comma-separated; empty when there are none. */}}
{{- define "protogate.descriptorPaths" -}}
{{- $d := .Values.descriptors }}
{{- $names := list }}
{{- if eq $d.source "files" }}
{{- $names = keys $d.files | sortAlpha }}
{{- else }}
{{- if not $d.names }}
{{- fail (printf "descriptors.names must list the descriptor files with descriptors.source=%s" $d.source) }}
{{- end }}
{{- $names = $d.names }}
{{- end }}
{{- $paths := list }}
{{- range $names }}
{{- $paths = append $paths (printf "%s/%s" (trimSuffix "/" $d.mountPath) .) }}
{{- end }}
{{- join "," $paths }}
{{- end }}

{{/*
The checksum that rolls the pods when the descriptors change: of the files given in values, or of
the existing ConfigMap as the cluster holds it (lookup answers nothing under `helm template`).
Empty for descriptors baked into the image: a new image is a new tag already.
*/}}
{{- define "protogate.descriptorsChecksum" -}}
{{- $d := .Values.descriptors }}
{{- if and (eq $d.source "files") $d.files }}
{{- toJson $d.files | sha256sum }}
{{- else if eq $d.source "configMap" }}
{{- $cm := lookup "v1" "ConfigMap" .Release.Namespace (include "protogate.descriptorsConfigMap" .) | default dict }}
{{- toJson (list (get $cm "data" | default dict) (get $cm "binaryData" | default dict)) | sha256sum }}
{{- end }}
{{- end }}

{{/* A duration as protogate writes them (250ms, 20s, 2m, 1h, or bare seconds), in whole seconds, rounded up. */}}
{{- define "protogate.seconds" -}}
{{- $text := toString . | trim }}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $text }}
{{- $unit := trimPrefix $number $text }}
{{- $scale := dict "ms" 0.001 "" 1.0 "s" 1.0 "m" 60.0 "h" 3600.0 }}
{{- if or (not $number) (not (hasKey $scale $unit)) }}
{{- fail (printf "%q is not a duration like 250ms, 20s, 2m or 1h" $text) }}
{{- end }}
{{- mulf (float64 $number) (get $scale $unit) | ceil | int }}
{{- end }}

{{/*
A value as a PROTOGATE_* variable holds it: lists joined with commas; whole numbers without an
exponent (values files give Helm every number as a float, and 8388608 would print as 8.388608e+06).
*/}}
{{- define "protogate.envValue" -}}
{{- $items := list }}
{{- range (kindIs "slice" . | ternary . (list .)) }}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- $items = append $items (int64 . | toString) }}
{{- else }}
{{- $items = append $items (toString .) }}
{{- end }}
{{- end }}
{{- join "," $items }}
{{- end }}

{{/*
The serving port's name, on the container and the Service: what it serves, since Istio reads the
protocol from the name. https under TLS (tls.secretName); grpc or http2 when service.appProtocol
says so; http otherwise.
*/}}
{{- define "protogate.servingPortName" -}}
{{- if .Values.tls.secretName }}https
{{- else if has .Values.service.appProtocol (list "grpc" "http2") }}{{ .Values.service.appProtocol }}
{{- else }}http
{{- end }}
{{- end }}

{{/* The Service port's appProtocol: service.appProtocol, or what the port's name says. */}}
{{- define "protogate.appProtocol" -}}
{{- .Values.service.appProtocol | default (include "protogate.servingPortName" .) }}
{{- end }}

{{/* The port the admin endpoints answer on: adminPort, or the serving port. */}}
{{- define "protogate.adminPortName" -}}
{{- if .Values.adminPort }}admin{{ else }}{{ include "protogate.servingPortName" . }}{{ end }}
{{- end }}

{{/* The scheme of the admin endpoints: HTTPS when they share the serving port and it serves TLS. */}}
{{- define "protogate.adminScheme" -}}
{{- if and .Values.tls.secretName (not .Values.adminPort) }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}
