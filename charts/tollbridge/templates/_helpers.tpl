{{/* The chart name, shortened to a DNS label. */}}
{{- define "tollbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name, plus the chart name unless it contains it. */}}
{{- define "tollbridge.fullname" -}}
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

{{- define "tollbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tollbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tollbridge.labels" -}}
helm.sh/chart: {{ include "tollbridge.chart" . }}
{{ include "tollbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tollbridge
{{- end -}}

{{/* Labels of cluster-scoped objects that are not the operator's own (classes, configs). */}}
{{- define "tollbridge.commonLabels" -}}
helm.sh/chart: {{ include "tollbridge.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: tollbridge
{{- end -}}

{{- define "tollbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tollbridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator image: repository@digest, else repository:tag (default: appVersion). */}}
{{- define "tollbridge.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "tollbridge.leaseName" -}}
{{- default (printf "%s-operator" (include "tollbridge.fullname" .) | trunc 63 | trimSuffix "-") .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* Checks across values that the schema cannot express with a clear message. */}}
{{- define "tollbridge.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail (printf "replicaCount is %d but leaderElection.enabled is false: only one replica may write, so more than one needs leader election" (int .Values.replicaCount)) -}}
{{- end -}}
{{- if and .Values.azure.workloadIdentity.enabled (not .Values.azure.workloadIdentity.clientId) -}}
{{- fail "azure.workloadIdentity.enabled needs azure.workloadIdentity.clientId (the client id of the managed identity or app registration)" -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.service.enabled) -}}
{{- fail "serviceMonitor.enabled needs metrics.service.enabled: the ServiceMonitor selects the metrics Service" -}}
{{- end -}}
{{- $names := dict -}}
{{- $configs := dict -}}
{{- range .Values.gatewayClasses -}}
{{- if hasKey $names .name -}}
{{- fail (printf "gatewayClasses: %q appears twice" .name) -}}
{{- end -}}
{{- $_ := set $names .name true -}}
{{- $config := default .name .providerConfigName -}}
{{- if hasKey $configs $config -}}
{{- fail (printf "gatewayClasses: ProviderConfig %q would be made twice (each class gets its own; give them different providerConfigName)" $config) -}}
{{- end -}}
{{- $_ := set $configs $config true -}}
{{- $provider := default "Local" .provider -}}
{{- if and (eq $provider "AWS") (not .aws) -}}
{{- fail (printf "gatewayClasses[%s]: provider AWS needs aws settings (at least aws.region)" .name) -}}
{{- end -}}
{{- if and (eq $provider "Azure") (not .azure) -}}
{{- fail (printf "gatewayClasses[%s]: provider Azure needs azure settings (subscriptionID, resourceGroup, serviceName)" .name) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The permissions of the operator, derived from what operator/src/controller and
operator/src/source do (operator/tests/helm_chart.rs runs the operator with exactly these).
Server-side apply of an object that does not exist yet is a create: `patch` and `create`.
*/}}

{{/* Cluster-scoped kinds: always in the ClusterRole. */}}
{{- define "tollbridge.clusterRules" -}}
# GatewayClasses: watched (reflector: list, watch); their status written (server-side apply).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gatewayclasses"]
  verbs: ["list", "watch"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gatewayclasses/status"]
  verbs: ["patch"]
# ProviderConfigs: watched.
- apiGroups: ["tollbridge.dev"]
  resources: ["providerconfigs"]
  verbs: ["list", "watch"]
# Namespaces: watched (listeners' allowedRoutes selectors); get kube-system for the
# cluster id unless clusterID is set.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
# IPAddresses: before a Local Gateway's Service is re-created for a new requested address,
# whether another Service holds that address.
- apiGroups: ["networking.k8s.io"]
  resources: ["ipaddresses"]
  verbs: ["get"]
{{- end -}}

{{/* Namespaced kinds: in the ClusterRole, or in a Role in watchNamespace. */}}
{{- define "tollbridge.namespacedRules" -}}
# Gateways, HTTPRoutes, GRPCRoutes, BackendTLSPolicies, ReferenceGrants: watched; statuses
# written; the cleanup finalizer of
# cloud Gateways and the record of where they were provisioned added and removed by
# server-side apply (patch on the Gateway itself; the record is re-read, get, before a place
# is dropped from it).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gateways", "httproutes", "grpcroutes", "backendtlspolicies", "referencegrants"]
  verbs: ["list", "watch"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gateways"]
  verbs: ["get", "patch"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gateways/status", "httproutes/status", "grpcroutes/status", "backendtlspolicies/status"]
  verbs: ["patch"]
# QuotaPolicies and ApiKeys: watched; statuses written.
- apiGroups: ["tollbridge.dev"]
  resources: ["quotapolicies", "apikeys"]
  verbs: ["list", "watch"]
- apiGroups: ["tollbridge.dev"]
  resources: ["quotapolicies/status", "apikeys/status"]
  verbs: ["patch"]
# Services and EndpointSlices: watched (backends); Services of Local Gateways' proxies applied
# and deleted.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
# ConfigMaps: watched by metadata; those a BackendTLSPolicy names (the CA certificates it
# trusts) are read.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch"]
# Secrets: watched by metadata; those a listener, an ApiKey or a counter store names are read
# (get); an ApiKey's missing Secret is created; a Local Gateway's config Secret is applied and
# deleted. The get / list / watch also let the operator grant them to the proxies' Roles (RBAC
# escalation check).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The proxies of Local Gateways: ServiceAccount, Role, RoleBinding, Deployment (watched by the
# label app.kubernetes.io/managed-by=tollbridge to repair hand edits; applied and deleted).
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Events (kube-runtime's Recorder: events.k8s.io/v1, created, then patched for a series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
