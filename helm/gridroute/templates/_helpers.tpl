{{/* Chart name, truncated to the 63 characters Kubernetes allows. */}}
{{- define "gridroute.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "gridroute.fullname" -}}
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

{{- define "gridroute.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "gridroute.labels" -}}
helm.sh/chart: {{ include "gridroute.chart" . }}
{{ include "gridroute.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gridroute
{{- end }}

{{- define "gridroute.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gridroute.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gridroute.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gridroute.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gridroute.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The ConfigMap holding the tables, or nothing for the built-in sample. */}}
{{- define "gridroute.tablesConfigMap" -}}
{{- if .Values.tables.existingConfigMap }}
{{- .Values.tables.existingConfigMap }}
{{- else if .Values.tables.files }}
{{- printf "%s-tables" (include "gridroute.fullname" .) }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding the client-certificate map, or nothing when there is none. */}}
{{- define "gridroute.certMapConfigMap" -}}
{{- if .Values.auth.certificateMap.existingConfigMap -}}
{{- .Values.auth.certificateMap.existingConfigMap -}}
{{- else if .Values.auth.certificateMap.entries -}}
{{- include "gridroute.fullname" . }}-certs
{{- end -}}
{{- end }}

{{/*
A router or API Deployment. Arguments: dict "root" $ "role" "api"|"router" "cfg" .Values.api|.Values.router
*/}}
{{- define "gridroute.deployment" -}}
{{- $root := .root }}
{{- $role := .role }}
{{- $cfg := .cfg }}
{{- $tables := include "gridroute.tablesConfigMap" $root }}
{{- $auth := $root.Values.auth }}
{{- $certMap := include "gridroute.certMapConfigMap" $root }}
{{- if not (or $auth.jwks.url $auth.jwks.existingSecret $certMap) }}
{{- fail "auth: set auth.jwks.url (the identity provider's JWKS), auth.jwks.existingSecret or auth.certificateMap: every call is authenticated (docs/ACCESS.md)" }}
{{- end }}
{{- $jwksFile := and (not $auth.jwks.url) $auth.jwks.existingSecret }}
{{- $authVolumes := or $jwksFile $auth.jwks.caSecret $certMap }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "gridroute.fullname" $root }}-{{ $role }}
  labels:
    {{- include "gridroute.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $role }}
spec:
  {{- if not (or $cfg.autoscaling.enabled (and (eq $role "router") $root.Values.router.keda.enabled)) }}
  replicas: {{ $cfg.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}
  selector:
    matchLabels:
      {{- include "gridroute.selectorLabels" $root | nindent 6 }}
      app.kubernetes.io/component: {{ $role }}
  template:
    metadata:
      {{- $annotations := deepCopy ($root.Values.podAnnotations | default dict) }}
      {{- if $root.Values.tables.files }}
      {{- $_ := set $annotations "checksum/tables" ($root.Values.tables.files | toYaml | sha256sum) }}
      {{- end }}
      {{- with $annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      labels:
        {{- include "gridroute.selectorLabels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ $role }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "gridroute.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automount }}
      terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: gridroute
          image: {{ include "gridroute.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: ["serve"]
          env:
            - name: GRIDROUTE_ROLE
              value: {{ $role | quote }}
            - name: GRIDROUTE_REDIS_URL
              {{- if $root.Values.redis.existingSecret }}
              valueFrom:
                secretKeyRef:
                  name: {{ $root.Values.redis.existingSecret }}
                  key: {{ $root.Values.redis.existingSecretKey }}
              {{- else }}
              value: {{ $root.Values.redis.url | quote }}
              {{- end }}
            - name: GRIDROUTE_KEY_PREFIX
              value: {{ $root.Values.redis.keyPrefix | quote }}
            - name: GRIDROUTE_WAIT_REPLICAS
              value: {{ $root.Values.redis.waitReplicas | quote }}
            - name: GRIDROUTE_WAIT_TIMEOUT_MS
              value: {{ $root.Values.redis.waitTimeoutMs | quote }}
            - name: GRIDROUTE_TRANSACTIONS
              value: {{ $root.Values.redis.transactions | quote }}
            - name: GRIDROUTE_TRANSACTION_MIN_BATCH
              value: {{ $root.Values.redis.transactionMinBatch | quote }}
            - name: GRIDROUTE_PACKED_EVENTS
              value: {{ $root.Values.redis.packedEvents | quote }}
            - name: GRIDROUTE_REGION_INDEX_DEPTH
              value: {{ $root.Values.redis.regionIndexDepth | quote }}
            - name: GRIDROUTE_CLAIMS_WITH_RECORDS
              value: {{ $root.Values.redis.claimsWithRecords | quote }}
            - name: GRIDROUTE_PARTITIONS
              value: {{ $root.Values.partitions | quote }}
            - name: GRIDROUTE_GRPC_ADDR
              value: "0.0.0.0:{{ $root.Values.service.grpcPort }}"
            - name: GRIDROUTE_HTTP_ADDR
              value: "0.0.0.0:{{ $root.Values.service.httpPort }}"
            - name: GRIDROUTE_METRICS_ADDR
              value: "0.0.0.0:{{ $root.Values.service.metricsPort }}"
            - name: GRIDROUTE_LOG_FORMAT
              value: {{ $root.Values.log.format | quote }}
            - name: RUST_LOG
              value: {{ $root.Values.log.level | quote }}
            - name: GRIDROUTE_SHUTDOWN_GRACE_MS
              value: {{ $root.Values.shutdownGraceMs | quote }}
            - name: GRIDROUTE_CLAIM_MIN_IDLE_MS
              value: {{ $root.Values.router.claimMinIdleMs | quote }}
            - name: GRIDROUTE_TIMER_POLL_MS
              value: {{ $root.Values.router.timerPollMs | quote }}
            - name: GRIDROUTE_STREAM_RETENTION
              value: {{ $root.Values.router.streamRetention | quote }}
            {{- if or $root.Values.archive.existingSecret $root.Values.archive.url }}
            - name: GRIDROUTE_ARCHIVE_URL
              {{- if $root.Values.archive.existingSecret }}
              valueFrom:
                secretKeyRef:
                  name: {{ $root.Values.archive.existingSecret }}
                  key: {{ $root.Values.archive.existingSecretKey }}
              {{- else }}
              value: {{ $root.Values.archive.url | quote }}
              {{- end }}
            - name: GRIDROUTE_HOT_PERIOD
              value: {{ $root.Values.archive.hotPeriod | quote }}
            - name: GRIDROUTE_ARCHIVE_EVERY
              value: {{ $root.Values.archive.every | quote }}
            {{- end }}
            - name: GRIDROUTE_CONSUMER_NAME
              valueFrom:
                fieldRef: {fieldPath: metadata.name}
            {{- if $tables }}
            - name: GRIDROUTE_TABLES
              value: /etc/gridroute/tables
            {{- end }}
            {{- if $root.Values.tls.enabled }}
            - name: GRIDROUTE_TLS_CERT
              value: /etc/gridroute/tls/tls.crt
            - name: GRIDROUTE_TLS_KEY
              value: /etc/gridroute/tls/tls.key
            - name: GRIDROUTE_CA_CERT
              value: /etc/gridroute/tls/ca.crt
            {{- if $root.Values.tls.clientAuth }}
            - name: GRIDROUTE_TLS_CLIENT_CA
              value: /etc/gridroute/tls/ca.crt
            - name: GRIDROUTE_CLIENT_CERT
              value: /etc/gridroute/tls/tls.crt
            - name: GRIDROUTE_CLIENT_KEY
              value: /etc/gridroute/tls/tls.key
            {{- end }}
            {{- end }}
            - name: GRIDROUTE_CONTACT_RETENTION
              value: {{ $auth.contactRetention | quote }}
            {{- if eq $role "api" }}
            {{- if $auth.jwks.url }}
            - name: GRIDROUTE_JWKS
              value: {{ $auth.jwks.url | quote }}
            {{- else if $auth.jwks.existingSecret }}
            - name: GRIDROUTE_JWKS
              value: /etc/gridroute/jwks/{{ $auth.jwks.existingSecretKey }}
            {{- end }}
            {{- if $auth.jwks.caSecret }}
            - name: GRIDROUTE_JWKS_CA
              value: /etc/gridroute/jwks-ca/ca.crt
            {{- end }}
            - name: GRIDROUTE_JWKS_REFRESH
              value: {{ $auth.jwks.refresh | quote }}
            {{- with $auth.issuer }}
            - name: GRIDROUTE_TOKEN_ISSUER
              value: {{ . | quote }}
            {{- end }}
            - name: GRIDROUTE_TOKEN_AUDIENCE
              value: {{ $auth.audience | quote }}
            - name: GRIDROUTE_TOKEN_LEEWAY_SECS
              value: {{ $auth.leewaySeconds | quote }}
            - name: GRIDROUTE_CLAIM_PERSON
              value: {{ $auth.claims.person | quote }}
            - name: GRIDROUTE_CLAIM_PRINCIPAL
              value: {{ $auth.claims.principal | quote }}
            - name: GRIDROUTE_CLAIM_ROLES
              value: {{ $auth.claims.roles | quote }}
            - name: GRIDROUTE_CLAIM_SCOPE
              value: {{ $auth.claims.scope | quote }}
            {{- if $certMap }}
            - name: GRIDROUTE_CERT_MAP
              value: /etc/gridroute/certs/certs.yaml
            {{- end }}
            {{- if and $root.Values.tls.clientAuth $auth.clientCertificateOptional }}
            - name: GRIDROUTE_TLS_CLIENT_OPTIONAL
              value: "true"
            {{- end }}
            {{- with $auth.rateLimits }}
            - name: GRIDROUTE_RATE_LIMITS
              value: {{ . | quote }}
            {{- end }}
            - name: GRIDROUTE_MAX_STREAMS_PER_PRINCIPAL
              value: {{ $auth.maxStreamsPerPrincipal | quote }}
            {{- if $auth.coHandlersSeeContact }}
            - name: GRIDROUTE_CO_HANDLERS_SEE_CONTACT
              value: "true"
            {{- end }}
            - name: GRIDROUTE_AUDIT_RETENTION
              value: {{ $auth.auditRetention | quote }}
            {{- end }}
            {{- with $root.Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            {{- if eq $role "api" }}
            - name: grpc
              containerPort: {{ $root.Values.service.grpcPort }}
              protocol: TCP
            - name: http
              containerPort: {{ $root.Values.service.httpPort }}
              protocol: TCP
            {{- end }}
            - name: metrics
              containerPort: {{ $root.Values.service.metricsPort }}
              protocol: TCP
          {{- if and (eq $role "api") $root.Values.tls.enabled }}
          {{- $health := printf "https://localhost:%v" $root.Values.service.grpcPort }}
          startupProbe:
            exec: {command: ["/usr/local/bin/gridroute", "health", "--addr", {{ $health | quote }}, "--service", "liveness"]}
            periodSeconds: 2
            failureThreshold: 30
          livenessProbe:
            exec: {command: ["/usr/local/bin/gridroute", "health", "--addr", {{ $health | quote }}, "--service", "liveness"]}
            periodSeconds: 10
            failureThreshold: 3
          readinessProbe:
            exec: {command: ["/usr/local/bin/gridroute", "health", "--addr", {{ $health | quote }}]}
            periodSeconds: 5
            failureThreshold: 2
          {{- else if eq $role "api" }}
          startupProbe:
            grpc: {port: {{ $root.Values.service.grpcPort }}, service: liveness}
            periodSeconds: 2
            failureThreshold: 30
          livenessProbe:
            grpc: {port: {{ $root.Values.service.grpcPort }}, service: liveness}
            periodSeconds: 10
            failureThreshold: 3
          readinessProbe:
            grpc: {port: {{ $root.Values.service.grpcPort }}}
            periodSeconds: 5
            failureThreshold: 2
          {{- else }}
          livenessProbe:
            tcpSocket: {port: metrics}
            periodSeconds: 10
            failureThreshold: 3
          {{- end }}
          resources:
            {{- toYaml $cfg.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          {{- $apiAuth := and (eq $role "api") $authVolumes }}
          {{- $archiveCa := $root.Values.archive.caSecret }}
          {{- $archiveClient := $root.Values.archive.clientCertSecret }}
          {{- if or $tables $root.Values.tls.enabled $apiAuth $archiveCa $archiveClient }}
          volumeMounts:
            {{- if $tables }}
            - name: tables
              mountPath: /etc/gridroute/tables
              readOnly: true
            {{- end }}
            {{- if $root.Values.tls.enabled }}
            - name: tls
              mountPath: /etc/gridroute/tls
              readOnly: true
            {{- end }}
            {{- if and (eq $role "api") $jwksFile }}
            - name: jwks
              mountPath: /etc/gridroute/jwks
              readOnly: true
            {{- end }}
            {{- if and (eq $role "api") $auth.jwks.caSecret }}
            - name: jwks-ca
              mountPath: /etc/gridroute/jwks-ca
              readOnly: true
            {{- end }}
            {{- if and (eq $role "api") $certMap }}
            - name: certs
              mountPath: /etc/gridroute/certs
              readOnly: true
            {{- end }}
            {{- if $archiveCa }}
            - name: archive-ca
              mountPath: /etc/gridroute/archive-ca
              readOnly: true
            {{- end }}
            {{- if $archiveClient }}
            - name: archive-client
              mountPath: /etc/gridroute/archive-client
              readOnly: true
            {{- end }}
          {{- end }}
      {{- if or $tables $root.Values.tls.enabled $apiAuth $archiveCa $archiveClient }}
      volumes:
        {{- if $tables }}
        - name: tables
          configMap:
            name: {{ $tables }}
        {{- end }}
        {{- if $root.Values.tls.enabled }}
        - name: tls
          secret:
            secretName: {{ required "tls.secretName is required when tls.enabled" $root.Values.tls.secretName }}
        {{- end }}
        {{- if and (eq $role "api") $jwksFile }}
        - name: jwks
          secret:
            secretName: {{ $auth.jwks.existingSecret }}
        {{- end }}
        {{- if and (eq $role "api") $auth.jwks.caSecret }}
        - name: jwks-ca
          secret:
            secretName: {{ $auth.jwks.caSecret }}
        {{- end }}
        {{- if and (eq $role "api") $certMap }}
        - name: certs
          configMap:
            name: {{ $certMap }}
        {{- end }}
        {{- if $archiveCa }}
        - name: archive-ca
          secret:
            secretName: {{ $archiveCa }}
        {{- end }}
        {{- if $archiveClient }}
        - name: archive-client
          secret:
            secretName: {{ $archiveClient }}
        {{- end }}
      {{- end }}
      {{- if $root.Values.topologySpread.enabled }}
      topologySpreadConstraints:
        - maxSkew: {{ $root.Values.topologySpread.maxSkew }}
          topologyKey: {{ $root.Values.topologySpread.topologyKey }}
          whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "gridroute.selectorLabels" $root | nindent 14 }}
              app.kubernetes.io/component: {{ $role }}
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "gridroute.selectorLabels" $root | nindent 14 }}
              app.kubernetes.io/component: {{ $role }}
      {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/* A HorizontalPodAutoscaler. Arguments as for gridroute.deployment. */}}
{{- define "gridroute.hpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "gridroute.fullname" .root }}-{{ .role }}
  labels:
    {{- include "gridroute.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .role }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "gridroute.fullname" .root }}-{{ .role }}
  minReplicas: {{ .cfg.autoscaling.minReplicas }}
  maxReplicas: {{ .cfg.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .cfg.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}

{{/* A PodDisruptionBudget. Arguments as for gridroute.deployment. */}}
{{- define "gridroute.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "gridroute.fullname" .root }}-{{ .role }}
  labels:
    {{- include "gridroute.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .role }}
spec:
  minAvailable: {{ .cfg.pdb.minAvailable }}
  selector:
    matchLabels:
      {{- include "gridroute.selectorLabels" .root | nindent 6 }}
      app.kubernetes.io/component: {{ .role }}
{{- end }}
