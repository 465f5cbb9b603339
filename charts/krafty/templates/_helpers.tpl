{{/*
Names and labels.
*/}}
{{- define "krafty.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "krafty.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "krafty.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "krafty.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "krafty.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "krafty.selectorLabels" -}}
app.kubernetes.io/name: {{ include "krafty.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "krafty.labels" -}}
helm.sh/chart: {{ include "krafty.chart" . }}
{{ include "krafty.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: krafty
{{- end }}

{{- define "krafty.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "krafty.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "krafty.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The installer's --listen value; an IPv6 address needs brackets before the port.
*/}}
{{- define "krafty.listen" -}}
{{- $address := .Values.installer.listenAddress }}
{{- if contains ":" $address }}
{{- printf "[%s]:%v" $address .Values.installer.port }}
{{- else }}
{{- printf "%s:%v" $address .Values.installer.port }}
{{- end }}
{{- end }}

{{/*
The installer's --invocation-log value: the plugins' default log below hostPaths.log, and the
logFile of every network that sets one, without repeats.
*/}}
{{- define "krafty.invocationLogs" -}}
{{- $logs := list (printf "%s/krafty.log" (trimSuffix "/" .Values.hostPaths.log)) }}
{{- range .Values.networks }}
{{- if .logFile }}{{ $logs = append $logs .logFile }}{{ end }}
{{- end }}
{{- join "," (uniq $logs) }}
{{- end }}

{{/*
krafty.conflist: the CNI conflist (JSON) of one entry of .Values.networks, the chain
krafty-vrf -> krafty-bridge -> krafty-veth. Built as a dict and serialised with toPrettyJson so
that quoting and escaping are JSON's, never string concatenation's. Optional fields appear only
when the entry sets them, leaving their defaults to the plugins. values.schema.json has already
checked the entry (list lengths, address families, addressing mode).

  {{ include "krafty.conflist" $network }}
*/}}
{{- define "krafty.conflist" -}}
{{- $net := . }}
{{- $scope := $net.scope | default "pod" }}
{{- $plugins := list }}

{{- if or (not (hasKey $net "vrf")) $net.vrf }}
{{- $vrf := dict "type" "krafty-vrf" "scope" $scope }}
{{- if hasKey $net "vrfTable" }}{{ $_ := set $vrf "vrfTable" $net.vrfTable }}{{ end }}
{{- range $field := list "logFile" "logMaxBytes" "logMaxFiles" }}
{{- if hasKey $net $field }}{{ $_ := set $vrf $field (get $net $field) }}{{ end }}
{{- end }}
{{- $plugins = append $plugins $vrf }}
{{- end }}

{{- $bridge := dict "type" "krafty-bridge" "scope" $scope }}
{{- $_ := include "krafty.bridgeFields" (dict "net" $net "into" $bridge) }}
{{- range $field := list "logFile" "logMaxBytes" "logMaxFiles" }}
{{- if hasKey $net $field }}{{ $_ := set $bridge $field (get $net $field) }}{{ end }}
{{- end }}
{{- $plugins = append $plugins $bridge }}

{{- $veth := dict "type" "krafty-veth" }}
{{- range $field := list "mtu" "routeMetric" "logFile" "logMaxBytes" "logMaxFiles" }}
{{- if hasKey $net $field }}{{ $_ := set $veth $field (get $net $field) }}{{ end }}
{{- end }}
{{- $_ := include "krafty.addressing" (dict "net" $net "into" $veth) }}
{{- $plugins = append $plugins $veth }}

{{- dict "cniVersion" ($net.cniVersion | default "1.0.0") "name" $net.name "plugins" $plugins | toPrettyJson }}
{{- end }}

{{/*
krafty.original: the single-plugin config (JSON) of one entry of .Values.networks with
`plugin: krafty`, as the original krafty's NetworkAttachmentDefinitions have it: "type": "krafty"
with subnet, gateway, ipam or podIP, vrfTable, and the optional fields the entry sets. The
plugin takes the scope from vrfTable (the network's with one, the pod's without), so "scope" is
written only for a network in scope network without a vrfTable.

  {{ include "krafty.original" $network }}
*/}}
{{- define "krafty.original" -}}
{{- $net := . }}
{{- $conf := dict "cniVersion" ($net.cniVersion | default "1.0.0") "name" $net.name "type" "krafty" }}
{{- $_ := include "krafty.bridgeFields" (dict "net" $net "into" $conf) }}
{{- if hasKey $net "vrfTable" }}
{{- $_ := set $conf "vrfTable" $net.vrfTable }}
{{- else if eq ($net.scope | default "pod") "network" }}
{{- $_ := set $conf "scope" "network" }}
{{- end }}
{{- range $field := list "routeMetric" "logFile" "logMaxBytes" "logMaxFiles" }}
{{- if hasKey $net $field }}{{ $_ := set $conf $field (get $net $field) }}{{ end }}
{{- end }}
{{- $_ := include "krafty.addressing" (dict "net" $net "into" $conf) }}
{{- $conf | toPrettyJson }}
{{- end }}

{{/*
krafty.bridgeFields: sets the bridge's fields of a network entry (.net) into the dict .into:
subnet and gateway (one subnet as a string, two, dual-stack, as a list, as the plugins take
them) and the optional ones the entry sets.
*/}}
{{- define "krafty.bridgeFields" -}}
{{- $net := .net }}
{{- $subnet := $net.subnets }}
{{- $gateway := $net.gateways }}
{{- if eq (len $net.subnets) 1 }}
{{- $subnet = first $net.subnets }}
{{- $gateway = first $net.gateways }}
{{- end }}
{{- $_ := set .into "subnet" $subnet }}
{{- $_ := set .into "gateway" $gateway }}
{{- range $field := list "mtu" "hairpinMode" "promiscMode" "multicastSnooping" "multiNode" }}
{{- if hasKey $net $field }}{{ $_ := set $.into $field (get $net $field) }}{{ end }}
{{- end }}
{{- end }}

{{/*
krafty.addressing: sets how a network entry (.net) addresses its pods into the dict .into (the
krafty-veth plugin, or krafty's config): an ipam block (host-local, one range set per subnet,
the routes in it), krafty-blocks and routes, podIP and routes, or the ips and mac capabilities
and routes.
*/}}
{{- define "krafty.addressing" -}}
{{- $net := .net }}
{{- $addressing := $net.addressing | default "ipam" }}
{{- if eq $addressing "blocks" }}
{{- /* The node agent's blocks (krafty.addressPools); the ipam block takes nothing but its type. */}}
{{- $_ := set .into "ipam" (dict "type" "krafty-blocks") }}
{{- with $net.routes }}{{ $_ := set $.into "routes" . }}{{ end }}
{{- else if eq $addressing "ipam" }}
{{- $ipamValues := $net.ipam | default dict }}
{{- $configuredRanges := $ipamValues.ranges | default list }}
{{- $ranges := list }}
{{- range $i, $cidr := $net.subnets }}
{{- $range := dict "subnet" $cidr "gateway" (index $net.gateways $i) }}
{{- if lt $i (len $configuredRanges) }}
{{- $range = merge $range (index $configuredRanges $i) }}
{{- end }}
{{- /* host-local: one range set per address family, each a list of ranges. */}}
{{- $ranges = append $ranges (list $range) }}
{{- end }}
{{- $ipam := dict "type" ($ipamValues.type | default "host-local") "ranges" $ranges }}
{{- with $ipamValues.dataDir }}{{ $_ := set $ipam "dataDir" . }}{{ end }}
{{- with $net.routes }}{{ $_ := set $ipam "routes" . }}{{ end }}
{{- $_ := set .into "ipam" $ipam }}
{{- else }}
{{- if eq $addressing "static" }}
{{- $_ := set .into "podIP" (ternary (first $net.podIPs) $net.podIPs (eq (len $net.podIPs) 1)) }}
{{- else }}
{{- /* runtime: Multus passes the pod annotation's "ips" and "mac" as runtimeConfig. */}}
{{- $_ := set .into "capabilities" (dict "ips" true "mac" true) }}
{{- end }}
{{- with $net.routes }}{{ $_ := set $.into "routes" . }}{{ end }}
{{- end }}
{{- end }}

{{/*
krafty.addressPools: the installer's --address-pools file (JSON), one pool per network with
addressing "blocks": its subnets, gateways and block prefix lengths. Checks what the schema
cannot: a block lies between the subnet's prefix and 4 addresses, and a subnet holds at most
65536 blocks (each may become a KraftyBlock object). Empty when no network uses blocks.
*/}}
{{- define "krafty.addressPools" -}}
{{- $pools := list }}
{{- range $net := .Values.networks }}
{{- if eq ($net.addressing | default "ipam") "blocks" }}
{{- $subnets := list }}
{{- range $i, $cidr := $net.subnets }}
{{- $subnetPrefix := atoi (index (splitList "/" $cidr) 1) }}
{{- $blockPrefix := int (index $net.blockPrefixes $i) }}
{{- $maxPrefix := ternary 128 32 (contains ":" $cidr) }}
{{- if or (lt $blockPrefix $subnetPrefix) (gt $blockPrefix (sub $maxPrefix 2)) }}
{{- fail (printf "networks %s: blockPrefixes[%d] %d must lie between %s's prefix length and %d" $net.name $i $blockPrefix $cidr (sub $maxPrefix 2)) }}
{{- end }}
{{- if gt (sub $blockPrefix $subnetPrefix) 16 }}
{{- fail (printf "networks %s: blockPrefixes[%d] %d carves %s into more than 65536 blocks; use larger blocks" $net.name $i $blockPrefix $cidr) }}
{{- end }}
{{- $subnets = append $subnets (dict "subnet" $cidr "gateway" (index $net.gateways $i) "blockPrefix" $blockPrefix) }}
{{- end }}
{{- $pools = append $pools (dict "network" $net.name "subnets" $subnets) }}
{{- end }}
{{- end }}
{{- if $pools }}{{ $pools | toPrettyJson }}{{ end }}
{{- end }}

{{/*
Non-empty when a network is stretched across nodes (multiNode): the installer then takes the
tunnels' peers from the cluster's Nodes (a watch; RBAC nodes list/watch).
*/}}
{{- define "krafty.multiNode" -}}
{{- range $net := .Values.networks }}{{ if hasKey $net "multiNode" }}true{{ end }}{{ end }}
{{- end }}
