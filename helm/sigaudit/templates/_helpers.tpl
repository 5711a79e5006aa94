{{/* Chart name. */}}
{{- define "sigaudit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, 63 characters at most (the CronJob's Jobs add 11 more, see below). */}}
{{- define "sigaudit.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sigaudit.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sigaudit.labels" -}}
helm.sh/chart: {{ include "sigaudit.chart" . }}
{{ include "sigaudit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sigaudit
{{- end }}

{{- define "sigaudit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sigaudit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sigaudit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sigaudit.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sigaudit.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s/%s:%s@%s" .Values.image.registry .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s/%s:%s" .Values.image.registry .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "sigaudit.runsCronJob" -}}
{{- if or (eq .Values.mode "cronjob") (eq .Values.mode "both") }}true{{ end }}
{{- end }}

{{- define "sigaudit.runsServer" -}}
{{- if or (eq .Values.mode "server") (eq .Values.mode "both") }}true{{ end }}
{{- end }}

{{- define "sigaudit.isSqlite" -}}
{{- if eq .Values.database.type "sqlite" }}true{{ end }}
{{- end }}

{{/* The claim holding the SQLite file, or empty when the data directory is an emptyDir. */}}
{{- define "sigaudit.claimName" -}}
{{- if and (include "sigaudit.isSqlite" .) .Values.persistence.enabled }}
{{- default (printf "%s-data" (include "sigaudit.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}
{{- end }}

{{- define "sigaudit.dbSecretName" -}}
{{- default (printf "%s-db" (include "sigaudit.fullname" .)) .Values.database.existingSecret }}
{{- end }}

{{- define "sigaudit.dbSecretKey" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}url{{ end }}
{{- end }}

{{- define "sigaudit.policyConfigMapName" -}}
{{- default (printf "%s-policy" (include "sigaudit.fullname" .)) .Values.policy.existingConfigMap }}
{{- end }}

{{/* Which way migrations run: "hook", "initContainer" or "" (disabled). */}}
{{- define "sigaudit.migrationStrategy" -}}
{{- if .Values.migrations.enabled }}
{{- if eq .Values.migrations.strategy "auto" }}
{{- if include "sigaudit.isSqlite" . }}initContainer{{ else }}hook{{ end }}
{{- else }}
{{- .Values.migrations.strategy }}
{{- end }}
{{- end }}
{{- end }}

{{/* Cross-field rules the schema cannot say clearly. Included by every workload template. */}}
{{- define "sigaudit.validate" -}}
{{- if eq .Values.database.type "external" }}
{{- if and (not .Values.database.url) (not .Values.database.existingSecret) }}
{{- fail "database.type=external needs database.existingSecret (preferred) or database.url" }}
{{- end }}
{{- else }}
{{- if or .Values.database.url .Values.database.existingSecret }}
{{- fail "database.url and database.existingSecret apply to database.type=external; set database.type=external to use them" }}
{{- end }}
{{- if eq (include "sigaudit.migrationStrategy" .) "hook" }}
{{- fail "migrations.strategy=hook cannot be used with database.type=sqlite: the hook Job runs before the PersistentVolumeClaim exists on install and while the old pod holds it on upgrade; use auto or initContainer" }}
{{- end }}
{{- if and (eq .Values.mode "both") (not .Values.persistence.enabled) }}
{{- fail "mode=both with database.type=sqlite needs persistence.enabled=true: the CronJob and the server must share one database file" }}
{{- end }}
{{- end }}
{{- if and (include "sigaudit.runsServer" .) (not .Values.server.auth.kubernetes.enabled) (not .Values.server.auth.tokenSecret.name) (not .Values.server.auth.insecureNoAuth) }}
{{- fail "the server needs authentication for /api and /reports: server.auth.kubernetes.enabled and/or server.auth.tokenSecret.name (or server.auth.insecureNoAuth=true behind a NetworkPolicy that restricts who connects)" }}
{{- end }}
{{- if eq (int .Values.server.port) (int .Values.server.metricsPort) }}
{{- fail "server.metricsPort must differ from server.port: the metrics port serves /metrics and the probes only" }}
{{- end }}
{{- if and (eq .Values.mode "both") (eq (.Values.cronjob.schedule | trim) (.Values.server.schedule | trim)) }}
{{- fail "mode=both with cronjob.schedule equal to server.schedule: both would scan the cluster at the same minute and the second to start would find the first running (exit 3, or a skipped slot); give them different schedules (the defaults are three hours apart)" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not (include "sigaudit.runsServer" .)) }}
{{- fail "metrics.serviceMonitor.enabled needs mode=server or mode=both: in mode=cronjob metrics are pushed to pushgateway.url" }}
{{- end }}
{{- end }}

{{/* Environment shared by every sigaudit container. */}}
{{- define "sigaudit.env" -}}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
- name: SIGAUDIT_DATA_DIR
  value: /var/lib/sigaudit
{{- if .Values.notifications.config }}
- name: SIGAUDIT_NOTIFY
  value: /etc/sigaudit/notify/notify.yaml
{{- end }}
{{- if .Values.recheckAfter }}
- name: SIGAUDIT_RECHECK_AFTER
  value: {{ .Values.recheckAfter | quote }}
{{- end }}
{{- if .Values.retention }}
- name: SIGAUDIT_RETENTION
  value: {{ .Values.retention | quote }}
{{- end }}
{{- if .Values.database.capacity }}
- name: SIGAUDIT_DB_CAPACITY
  value: {{ .Values.database.capacity | quote }}
{{- end }}
{{- if include "sigaudit.isSqlite" . }}
- name: SIGAUDIT_DB
  value: sqlite:////var/lib/sigaudit/sigaudit.db
{{- else }}
- name: SIGAUDIT_DB
  valueFrom:
    secretKeyRef:
      name: {{ include "sigaudit.dbSecretName" . }}
      key: {{ include "sigaudit.dbSecretKey" . }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Data volume mount (SQLite only). */}}
{{- define "sigaudit.dataMount" -}}
{{- if include "sigaudit.isSqlite" . }}
- name: data
  mountPath: /var/lib/sigaudit
{{- end }}
{{- end }}

{{- define "sigaudit.dataVolume" -}}
{{- if include "sigaudit.isSqlite" . }}
- name: data
{{- if include "sigaudit.claimName" . }}
  persistentVolumeClaim:
    claimName: {{ include "sigaudit.claimName" . }}
{{- else }}
  emptyDir:
    sizeLimit: 1Gi
{{- end }}
{{- end }}
{{- end }}

{{- define "sigaudit.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: policy
  mountPath: /etc/sigaudit/policy
  readOnly: true
{{- include "sigaudit.dataMount" . }}
{{- if .Values.trust.files }}
- name: trust-inline
  mountPath: /etc/sigaudit/trust/inline
  readOnly: true
{{- end }}
{{- range $i, $cm := .Values.trust.configMaps }}
- name: trust-cm-{{ $i }}
  mountPath: /etc/sigaudit/trust/{{ $cm.dir }}
  readOnly: true
{{- end }}
{{- range $i, $s := .Values.trust.secrets }}
- name: trust-secret-{{ $i }}
  mountPath: /etc/sigaudit/trust/{{ $s.dir }}
  readOnly: true
{{- end }}
{{- if .Values.registryAuth.dockerConfigSecret }}
- name: docker-config
  mountPath: /etc/sigaudit/docker
  readOnly: true
{{- end }}
{{- if .Values.notifications.config }}
- name: notify
  mountPath: /etc/sigaudit/notify/notify.yaml
  subPath: notify.yaml
  readOnly: true
{{- end }}
{{- range $i, $s := .Values.notifications.secrets }}
- name: notify-secret-{{ $i }}
  mountPath: /etc/sigaudit/notify/{{ $s }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "sigaudit.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
- name: policy
  configMap:
    name: {{ include "sigaudit.policyConfigMapName" . }}
    items:
      - key: {{ if .Values.policy.existingConfigMap }}{{ .Values.policy.existingConfigMapKey }}{{ else }}policy.yaml{{ end }}
        path: policy.yaml
{{- include "sigaudit.dataVolume" . }}
{{- if .Values.trust.files }}
- name: trust-inline
  configMap:
    name: {{ include "sigaudit.fullname" . }}-trust
{{- end }}
{{- range $i, $cm := .Values.trust.configMaps }}
- name: trust-cm-{{ $i }}
  configMap:
    name: {{ $cm.name }}
{{- end }}
{{- range $i, $s := .Values.trust.secrets }}
- name: trust-secret-{{ $i }}
  secret:
    secretName: {{ $s.name }}
{{- end }}
{{- if .Values.notifications.config }}
- name: notify
  configMap:
    name: {{ include "sigaudit.fullname" . }}-notify
{{- end }}
{{- range $i, $s := .Values.notifications.secrets }}
- name: notify-secret-{{ $i }}
  secret:
    secretName: {{ $s }}
{{- end }}
{{- if .Values.registryAuth.dockerConfigSecret }}
- name: docker-config
  secret:
    secretName: {{ .Values.registryAuth.dockerConfigSecret }}
    items:
      - key: .dockerconfigjson
        path: config.json
{{- end }}
{{- end }}

{{/* Flags shared by `scan` and `serve`: what to audit and against which policy. */}}
{{- define "sigaudit.selectionArgs" -}}
- --policy=/etc/sigaudit/policy/policy.yaml
- --cluster={{ .Values.clusterName }}
{{- if .Values.policyImport.kyverno }}
- --policy-from=kyverno:cluster
{{- end }}
{{- if .Values.policyImport.clusterImagePolicy }}
- --policy-from=clusterimagepolicy:cluster
{{- end }}
{{- if .Values.policyImport.notation }}
- --policy-from=notation:cluster
{{- end }}
{{- if .Values.policyImport.kritis }}
- --policy-from=kritis:cluster
{{- end }}
{{- range .Values.scope.namespaces }}
- -n
- {{ . | quote }}
{{- end }}
{{- range .Values.scope.excludeNamespaces }}
- --exclude-namespace={{ . }}
{{- end }}
{{- if .Values.registryAuth.fromImagePullSecrets }}
- --pull-secrets
{{- else }}
- --no-pull-secrets
{{- end }}
{{- if .Values.registryAuth.dockerConfigSecret }}
- --docker-config=/etc/sigaudit/docker/config.json
{{- end }}
{{- with include "sigaudit.registryAuthSources" . }}
- --registry-auth={{ . }}
{{- end }}
{{- if not (kindIs "invalid" .Values.scan.concurrency) }}
- --concurrency={{ .Values.scan.concurrency }}
{{- end }}
{{- if .Values.clusterReports.enabled }}
- --reports={{ .Values.clusterReports.format }}
{{- end }}
{{- end }}

{{/* Pod-level fields shared by every pod of the chart. */}}
{{- define "sigaudit.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The `sigaudit db upgrade` container (hook Job or init container). */}}
{{- define "sigaudit.migrateContainer" -}}
- name: migrate
  image: {{ include "sigaudit.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - db
    - upgrade
  env:
    {{- include "sigaudit.env" . | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.migrations.resources | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- if include "sigaudit.isSqlite" . }}
    - name: data
      mountPath: /var/lib/sigaudit
    {{- end }}
{{- end }}

{{/* `--registry-auth` sources: registryAuth.sources plus the provider of the cloud preset. */}}
{{- define "sigaudit.registryAuthSources" -}}
{{- $sources := .Values.registryAuth.sources | default list -}}
{{- with .Values.registryAuth.cloud }}
{{- $sources = append $sources (get (dict "eks" "ecr" "gke" "gcr" "aks" "acr") .) -}}
{{- end }}
{{- join "," (uniq $sources) -}}
{{- end }}

{{/* ServiceAccount annotations: serviceAccount.annotations plus the cloud preset's workload identity. */}}
{{- define "sigaudit.serviceAccountAnnotations" -}}
{{- $annotations := deepCopy (.Values.serviceAccount.annotations | default dict) -}}
{{- $keys := dict "eks" "eks.amazonaws.com/role-arn" "gke" "iam.gke.io/gcp-service-account" "aks" "azure.workload.identity/client-id" -}}
{{- if and .Values.registryAuth.cloud .Values.registryAuth.cloudIdentity }}
{{- $_ := set $annotations (get $keys .Values.registryAuth.cloud) .Values.registryAuth.cloudIdentity -}}
{{- end }}
{{- if $annotations }}
{{- toYaml $annotations }}
{{- end }}
{{- end }}

{{/* Pod labels a cloud preset needs (AKS Workload Identity's webhook selects on one). */}}
{{- define "sigaudit.cloudPodLabels" -}}
{{- if eq .Values.registryAuth.cloud "aks" }}
azure.workload.identity/use: "true"
{{- end }}
{{- end }}
