{{/* Names and labels shared by the templates. */}}
{{- define "argonic.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "argonic.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: inference-server
{{- end -}}

{{- define "argonic.labels" -}}
{{ include "argonic.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
argonic/server: {{ .Values.server }}
{{- end -}}

{{/* The model repository path inside the server container. */}}
{{- define "argonic.modelPath" -}}
{{- if eq .Values.modelRepository.source "image" -}}
{{- .Values.modelRepository.imagePath -}}
{{- else -}}
{{- .Values.modelRepository.mountPath -}}
{{- end -}}
{{- end -}}

{{- define "argonic.proxyLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: proxy
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* A probe of the server: gRPC health, or a TCP check when TLS is on (the kubelet's
gRPC probes speak no TLS). */}}
{{- define "argonic.probe" -}}
{{- if .Values.security.tls.enabled -}}
tcpSocket:
  port: {{ .Values.ports.grpc }}
{{- else -}}
grpc:
  port: {{ .Values.ports.grpc }}
{{- end -}}
{{- end }}

{{/* Triton's --trace-config flags (both servers take them), from .Values.tracing */}}
{{- define "argonic.traceArgs" -}}
{{- if .Values.tracing.enabled }}
- --trace-config=mode=opentelemetry
- --trace-config=opentelemetry,url={{ required "tracing.url: the OTLP/HTTP collector, host:port/v1/traces" .Values.tracing.url }}
- --trace-config=opentelemetry,resource=pod_name=$(POD_NAME)
- --trace-config=rate={{ .Values.tracing.rate | int }}
- --trace-config=level={{ .Values.tracing.level }}
- --trace-config=count={{ .Values.tracing.count | int }}
{{- end }}
{{- end }}
