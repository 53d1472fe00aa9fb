{{/*
Name and label helpers in the bitnami style, plus the pod template shared by the
Deployment and the KEDA ScaledJob so both modes run the same hardened worker.
*/}}

{{/* The chart name, truncated to a DNS-1123 label. */}}
{{- define "slingshot-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name of the release's resources: RELEASE-CHART unless the release name already contains the chart name. */}}
{{- define "slingshot-service.fullname" -}}
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

{{/* The full name plus a suffix, still a valid DNS-1123 label. Call with (dict "context" $ "suffix" "metrics"). */}}
{{- define "slingshot-service.componentName" -}}
{{- $base := include "slingshot-service.fullname" .context | trunc (int (sub 62 (len .suffix))) | trimSuffix "-" -}}
{{- printf "%s-%s" $base .suffix -}}
{{- end -}}

{{/* CHART-VERSION for the helm.sh/chart label. */}}
{{- define "slingshot-service.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource; the standard ones win over commonLabels (YAML, one label per line). */}}
{{- define "slingshot-service.labels" -}}
{{- $standard := dict "helm.sh/chart" (include "slingshot-service.chart" .) "app.kubernetes.io/version" .Chart.AppVersion "app.kubernetes.io/managed-by" .Release.Service "app.kubernetes.io/component" "worker" "app.kubernetes.io/part-of" "slingshot" -}}
{{- $standard = merge $standard (include "slingshot-service.selectorLabels" . | fromYaml) -}}
{{- toYaml (merge $standard (deepCopy .Values.commonLabels)) -}}
{{- end -}}

{{/* Labels of every resource plus extra ones (which never replace a standard label). Call with (dict "context" $ "extra" DICT). */}}
{{- define "slingshot-service.labelsWith" -}}
{{- toYaml (merge (include "slingshot-service.labels" .context | fromYaml) (deepCopy .extra)) -}}
{{- end -}}

{{/* Labels that select the release's pods; never change them after the first install. */}}
{{- define "slingshot-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slingshot-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Metadata shared by every resource: namespace, labels, common annotations. */}}
{{- define "slingshot-service.metadata" -}}
namespace: {{ .Release.Namespace | quote }}
labels:
  {{- include "slingshot-service.labels" . | nindent 2 }}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The ServiceAccount the pods run as. */}}
{{- define "slingshot-service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "slingshot-service.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* REPOSITORY@DIGEST, or REPOSITORY:TAG with the chart's appVersion as the default tag. */}}
{{- define "slingshot-service.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when the release runs as KEDA ScaledJob workers (no Deployment, no PDB). */}}
{{- define "slingshot-service.scaledJob" -}}
{{- if and .Values.keda.enabled (eq .Values.keda.kind "ScaledJob") -}}true{{- end -}}
{{- end -}}

{{/* Kubernetes' grace period: the drain deadline plus a margin, so the worker exits before SIGKILL. */}}
{{- define "slingshot-service.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add .Values.service.drainTimeout .Values.service.drainMargin -}}
{{- else -}}
{{- int .Values.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/* Secret names: the existing one named in values, else the one the chart creates. */}}
{{- define "slingshot-service.gpgSecretName" -}}
{{- default (include "slingshot-service.componentName" (dict "context" . "suffix" "gpg")) .Values.gpg.existingSecret -}}
{{- end -}}

{{- define "slingshot-service.passwordStoreSecretName" -}}
{{- default (include "slingshot-service.componentName" (dict "context" . "suffix" "password-store")) .Values.passwordStore.existingSecret -}}
{{- end -}}

{{- define "slingshot-service.kedaSecretName" -}}
{{- default (include "slingshot-service.componentName" (dict "context" . "suffix" "rabbitmq")) .Values.keda.connection.existingSecret -}}
{{- end -}}

{{/*
Checks the schema cannot express; fails with every problem at once, each naming the value to fix.
*/}}
{{- define "slingshot-service.validateValues" -}}
{{- $messages := list -}}
{{- if not .Values.service.name -}}
{{- $messages = append $messages "service.name is required: the slingshot service name (SLINGSHOT_SERVICE)" -}}
{{- end -}}
{{- if not .Values.service.configHost -}}
{{- $messages = append $messages "service.configHost is required: the config service host or URL (SLINGSHOT_CONFIG_HOST)" -}}
{{- end -}}
{{- if not .Values.image.repository -}}
{{- $messages = append $messages "image.repository is required: the service's image, built FROM the slingshot base image" -}}
{{- end -}}
{{- $grace := int (include "slingshot-service.terminationGracePeriodSeconds" .) -}}
{{- if le $grace (int .Values.service.drainTimeout) -}}
{{- $messages = append $messages (printf "terminationGracePeriodSeconds (%d) must be greater than service.drainTimeout (%d): Kubernetes would kill the worker before it drains" $grace (int .Values.service.drainTimeout)) -}}
{{- end -}}
{{- $gpg := 0 -}}
{{- range (list .Values.gpg.existingSecret .Values.gpg.privateKeys .Values.gpg.volume) }}{{ if . }}{{ $gpg = add1 $gpg }}{{ end }}{{ end -}}
{{- if ne $gpg 1 -}}
{{- $messages = append $messages (printf "set exactly one of gpg.existingSecret, gpg.privateKeys, gpg.volume (%d set): the worker decrypts its pass entries with this key" $gpg) -}}
{{- end -}}
{{- $store := 0 -}}
{{- range (list .Values.passwordStore.existingSecret .Values.passwordStore.existingConfigMap .Values.passwordStore.files .Values.passwordStore.volume) }}{{ if . }}{{ $store = add1 $store }}{{ end }}{{ end -}}
{{- if ne $store 1 -}}
{{- $messages = append $messages (printf "set exactly one of passwordStore.existingSecret, passwordStore.existingConfigMap, passwordStore.files, passwordStore.volume (%d set)" $store) -}}
{{- end -}}
{{- if and .Values.passwordStore.items .Values.passwordStore.volume -}}
{{- $messages = append $messages "passwordStore.items applies to a Secret or ConfigMap, not to passwordStore.volume" -}}
{{- end -}}
{{- if .Values.keda.enabled -}}
{{- if not .Values.keda.queueName -}}
{{- $messages = append $messages "keda.queueName is required when keda.enabled is true: the inbound queue KEDA watches (the service's `in` queue)" -}}
{{- end -}}
{{- if and (not .Values.keda.connection.existingSecret) (not .Values.keda.connection.url) -}}
{{- $messages = append $messages "keda.connection.existingSecret or keda.connection.url is required when keda.enabled is true: the RabbitMQ management API URL" -}}
{{- end -}}
{{- if and .Values.keda.connection.existingSecret .Values.keda.connection.url -}}
{{- $messages = append $messages "set only one of keda.connection.existingSecret and keda.connection.url" -}}
{{- end -}}
{{- if gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount) -}}
{{- $messages = append $messages (printf "keda.minReplicaCount (%d) must not exceed keda.maxReplicaCount (%d)" (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) -}}
{{- end -}}
{{- end -}}
{{- if and (not (kindIs "invalid" .Values.pdb.minAvailable)) (not (kindIs "invalid" .Values.pdb.maxUnavailable)) -}}
{{- $messages = append $messages "set only one of pdb.minAvailable and pdb.maxUnavailable" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
{{- $messages = append $messages "metrics.serviceMonitor.enabled needs metrics.enabled: the ServiceMonitor scrapes the metrics Service" -}}
{{- end -}}
{{- if $messages -}}
{{- fail (printf "\n\nslingshot-service: invalid values:\n- %s" (join "\n- " $messages)) -}}
{{- end -}}
{{- end -}}

{{/* Checksum of the chart-created secrets, so pods restart when a key or a store entry changes. */}}
{{- define "slingshot-service.secretsChecksum" -}}
{{- dict "gpg" .Values.gpg.privateKeys "store" .Values.passwordStore.files | toJson | sha256sum -}}
{{- end -}}

{{/*
The worker pod template (metadata and spec). Call with the root context; the ScaledJob mode
adds the idle-exit settings and restartPolicy Never.
*/}}
{{- define "slingshot-service.podTemplate" -}}
{{- $scaledJob := include "slingshot-service.scaledJob" . -}}
metadata:
  labels:
    {{- include "slingshot-service.labelsWith" (dict "context" . "extra" .Values.podLabels) | nindent 4 }}
  {{- $annotations := deepCopy .Values.podAnnotations }}
  {{- if or .Values.gpg.privateKeys .Values.passwordStore.files }}
  {{- $_ := set $annotations "checksum/secrets" (include "slingshot-service.secretsChecksum" .) }}
  {{- end }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "slingshot-service.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  terminationGracePeriodSeconds: {{ include "slingshot-service.terminationGracePeriodSeconds" . }}
  {{- if $scaledJob }}
  restartPolicy: Never
  {{- end }}
  {{- with .Values.image.pullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . | quote }}
    {{- end }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . | quote }}
  {{- end }}
  {{- with .Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: worker
      image: {{ include "slingshot-service.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- with .Values.containerSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      env:
        - name: SLINGSHOT_SERVICE
          value: {{ .Values.service.name | quote }}
        - name: SLINGSHOT_CONFIG_HOST
          value: {{ .Values.service.configHost | quote }}
        - name: SLINGSHOT_HANDLER
          value: {{ .Values.service.handler | quote }}
        - name: SLINGSHOT_DRAIN_TIMEOUT
          value: {{ .Values.service.drainTimeout | int | quote }}
        - name: SLINGSHOT_PREFETCH
          value: {{ .Values.service.prefetch | int | quote }}
        {{- if not (kindIs "invalid" .Values.service.deliveryLimit) }}
        - name: SLINGSHOT_DELIVERY_LIMIT
          value: {{ .Values.service.deliveryLimit | int | quote }}
        {{- end }}
        - name: SLINGSHOT_HEALTH_PORT
          value: {{ .Values.service.healthPort | int | quote }}
        - name: SLINGSHOT_GPG_KEYS_DIR
          value: /run/secrets/slingshot/gpg
        - name: PASSWORD_STORE_DIR
          value: /run/secrets/slingshot/password-store
        {{- if $scaledJob }}
        - name: SLINGSHOT_EXIT_WHEN_IDLE
          value: {{ .Values.keda.scaledJob.exitWhenIdle | int | quote }}
        {{- if .Values.keda.scaledJob.maxMessages }}
        - name: SLINGSHOT_MAX_MESSAGES
          value: {{ .Values.keda.scaledJob.maxMessages | int | quote }}
        {{- end }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.service.healthPort | int }}
          protocol: TCP
      {{- if .Values.livenessProbe.enabled }}
      livenessProbe:
        httpGet:
          path: /healthz
          port: http
        {{- toYaml (omit .Values.livenessProbe "enabled") | nindent 8 }}
      {{- end }}
      {{- if .Values.readinessProbe.enabled }}
      readinessProbe:
        httpGet:
          path: /readyz
          port: http
        {{- toYaml (omit .Values.readinessProbe "enabled") | nindent 8 }}
      {{- end }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: gpg
          mountPath: /run/secrets/slingshot/gpg
          readOnly: true
        - name: password-store
          mountPath: /run/secrets/slingshot/password-store
          readOnly: true
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        {{- with .Values.tmp.medium }}
        medium: {{ . }}
        {{- end }}
        {{- with .Values.tmp.sizeLimit }}
        sizeLimit: {{ . }}
        {{- end }}
    - name: gpg
      {{- if .Values.gpg.volume }}
      {{- toYaml .Values.gpg.volume | nindent 6 }}
      {{- else }}
      secret:
        secretName: {{ include "slingshot-service.gpgSecretName" . }}
        defaultMode: 288  {{- /* 0440: readable by the pod's fsGroup only */}}
      {{- end }}
    - name: password-store
      {{- if .Values.passwordStore.volume }}
      {{- toYaml .Values.passwordStore.volume | nindent 6 }}
      {{- else if .Values.passwordStore.existingConfigMap }}
      configMap:
        name: {{ .Values.passwordStore.existingConfigMap }}
        defaultMode: 288
        {{- with .Values.passwordStore.items }}
        items:
          {{- toYaml . | nindent 10 }}
        {{- end }}
      {{- else }}
      secret:
        secretName: {{ include "slingshot-service.passwordStoreSecretName" . }}
        defaultMode: 288
        {{- with .Values.passwordStore.items }}
        items:
          {{- toYaml . | nindent 10 }}
        {{- end }}
      {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/*
The KEDA RabbitMQ trigger on the inbound queue. The http protocol (management API) with
excludeUnacknowledged "false" counts ready plus unacknowledged messages, so messages that
busy workers hold keep their replicas (or jobs) alive instead of being scaled away.
*/}}
{{- define "slingshot-service.kedaTriggers" -}}
- type: rabbitmq
  metadata:
    protocol: http
    queueName: {{ .Values.keda.queueName | quote }}
    mode: QueueLength
    value: {{ .Values.keda.queueLength | int | quote }}
    activationValue: {{ .Values.keda.activationQueueLength | int | quote }}
    excludeUnacknowledged: "false"
    {{- with .Values.keda.vhostName }}
    vhostName: {{ . | quote }}
    {{- end }}
  authenticationRef:
    name: {{ include "slingshot-service.fullname" . }}
{{- end -}}
