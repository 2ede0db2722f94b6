/// Reading a kube-proxy `KubeProxyConfiguration` file (`--config`), so a kube-proxy user's
/// settings carry over. The value parsers are public so the CLI validates flags the same way.

extension NodeConfig {
    /// Applies a `kubeproxy.config.k8s.io/v1alpha1` `KubeProxyConfiguration` on top of `base`.
    ///
    /// Fields the file leaves out keep `base`'s value. Like kube-proxy's lenient decoding, unknown
    /// fields are reported in `notes` rather than refused; an invalid value is a `ConfigError` naming
    /// the field by its dotted path. In a multi-document file (a kubeadm config) the
    /// `KubeProxyConfiguration` document is used and the others are noted.
    public static func decodeKubeProxyConfiguration(
        _ text: String, base: NodeConfig
    ) throws(ConfigError) -> (config: NodeConfig, notes: [String]) {
        let documents: [Field]
        do {
            documents = try YAMLValue.documents(in: text).map { Field($0) }.filter { !$0.isAbsent }
        } catch {
            throw ConfigError(field: "--config", message: "not valid YAML: \(describeYAMLError(error))")
        }
        var notes: [String] = []
        do throws(FieldError) {
            let kinds = documents.map { ((try? $0["kind"].string()) ?? nil) ?? "" }
            let chosen = kinds.firstIndex(of: "KubeProxyConfiguration") ?? 0
            for (index, kind) in kinds.enumerated() where index != chosen {
                notes.append("document \(index + 1) (kind \(kind.isEmpty ? "unknown" : kind)) ignored")
            }
            guard chosen < documents.count else {
                throw FieldError(field: "--config", message: "the file holds no KubeProxyConfiguration")
            }
            var config = base
            try config.apply(documents[chosen], notes: &notes)
            return (config, notes)
        } catch {
            throw ConfigError(field: error.field, message: error.message)
        }
    }

    /// Go `time.ParseDuration` syntax (`30s`, `1m0s`, `2h22m`, `500ms`, `1.5s`, `-1s`, `0`), in seconds.
    /// Returns nil for anything Go would refuse.
    public static func parseGoDuration(_ s: String) -> Double? {
        let units: [String: Double] = [
            "ns": 1e-9, "us": 1e-6, "\u{B5}s": 1e-6, "\u{3BC}s": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600,
        ]
        var rest = Substring(s).unicodeScalars[...]
        var sign = 1.0
        if let first = rest.first, first == "-" || first == "+" {
            sign = first == "-" ? -1 : 1
            rest = rest.dropFirst()
        }
        if String(rest) == "0" { return 0 }
        guard !rest.isEmpty else { return nil }
        func isDigit(_ scalar: Unicode.Scalar) -> Bool { ("0"..."9").contains(scalar) }
        var total = 0.0
        while !rest.isEmpty {
            let whole = rest.prefix(while: isDigit)
            rest = rest.dropFirst(whole.count)
            var fraction = Substring.UnicodeScalarView()[...]
            if rest.first == "." {
                rest = rest.dropFirst()
                fraction = rest.prefix(while: isDigit)
                rest = rest.dropFirst(fraction.count)
            }
            guard !whole.isEmpty || !fraction.isEmpty else { return nil }
            let unit = rest.prefix { $0 != "." && !isDigit($0) }
            rest = rest.dropFirst(unit.count)
            guard let scale = units[String(unit)],
                  let value = Double("\(whole.isEmpty ? "0" : String(whole)).\(fraction.isEmpty ? "0" : String(fraction))")
            else { return nil }
            total += value * scale
        }
        // Go keeps durations in an Int64 of nanoseconds.
        guard total <= 9_223_372_036.854_775_807 else { return nil }
        return sign * total
    }

    /// A `clusterCIDR` / `--cluster-cidr` value: one CIDR, or a comma-separated dual-stack pair.
    public static func parseClusterCIDRs(_ text: String, field: String) throws(ConfigError) -> [CIDR] {
        guard !text.trimmed.isEmpty else { return [] }  // no local-traffic detector
        var cidrs: [CIDR] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let cidr = try configValue { () throws(FieldError) in try parseCIDR(String(part), field: field) }
            if cidrs.contains(where: { $0.family == cidr.family }) || cidrs.count == 2 {
                throw ConfigError(field: field, message: "\(quoted(text)): give one CIDR, or one IPv4 and one IPv6 CIDR separated by a comma")
            }
            cidrs.append(cidr)
        }
        return cidrs
    }

    /// `nodePortAddresses` / `--nodeport-addresses`: CIDRs, or the single keyword `primary`;
    /// `all` means every address (`0.0.0.0/0` and `::/0`).
    public static func parseNodePortAddresses(_ values: [String], field: String) throws(ConfigError) -> [NodePortAddress] {
        var result: [NodePortAddress] = []
        for (index, raw) in values.enumerated() {
            let value = raw.trimmed
            let element = "\(field)[\(index)]"
            switch value {
            case "primary":
                guard values.count == 1 else {
                    throw ConfigError(field: element, message: "\"primary\" cannot be combined with CIDRs; use it alone")
                }
                result.append(.primary)
            case "all":
                result += [.cidr(CIDR("0.0.0.0/0")!), .cidr(CIDR("::/0")!)]
            case "localhost":
                throw ConfigError(
                    field: element,
                    message: "\"localhost\" is not supported in nftables mode: NodePorts are never served on loopback "
                        + "(use CIDRs, \"primary\" or \"all\")")
            default:
                let cidr = try configValue { () throws(FieldError) in try parseCIDR(value, field: element) }
                result.append(.cidr(cidr))
            }
        }
        return result
    }

    /// A `healthzBindAddress` / `metricsBindAddress` value: `IP:port` (`[IPv6]:port`), port 1-65535.
    public static func validateHostPort(_ text: String, field: String) throws(ConfigError) {
        let host: Substring
        let port: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let after = text[text.index(after: close)...]
            guard after.hasPrefix(":") else {
                throw ConfigError(field: field, message: "\(quoted(text)) must be IP:port, e.g. [::]:10256")
            }
            port = after.dropFirst()
        } else {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw ConfigError(field: field, message: "\(quoted(text)) must be IP:port, e.g. 0.0.0.0:10256 or [::]:10256")
            }
            host = parts[0]
            port = parts[1]
        }
        guard IPAddress(String(host)) != nil else {
            throw ConfigError(field: field, message: "\(quoted(String(host))) in \(quoted(text)) is not an IP address")
        }
        guard let number = parseDecimal(String(port)), (1...65535).contains(number), !port.hasPrefix("+") else {
            throw ConfigError(field: field, message: "port \(quoted(String(port))) in \(quoted(text)) must be a number from 1 to 65535")
        }
    }

    /// A sync period (`nftables.syncPeriod`, `--iptables-sync-period` …) in seconds; it must be
    /// above zero, or at least zero when `allowZero`.
    public static func parsePeriod(_ text: String, field: String, allowZero: Bool) throws(ConfigError) -> Double {
        guard let seconds = parseGoDuration(text.trimmed) else {
            throw ConfigError(field: field, message: "\(quoted(text)) is not a duration; use Go syntax such as 30s, 1m0s, 2h22m or 500ms")
        }
        if allowZero ? seconds < 0 : seconds <= 0 {
            throw ConfigError(field: field, message: "\(quoted(text)) must be \(allowZero ? "zero or more" : "greater than zero")")
        }
        return seconds
    }

    /// The top-level fields of v1alpha1 (plus `masqueradeAll`), so anything else can be noted as unknown.
    private static let knownFields: Set<String> = [
        "apiVersion", "kind", "featureGates", "clientConnection", "logging", "hostnameOverride", "bindAddress",
        "healthzBindAddress", "metricsBindAddress", "bindAddressHardFail", "enableProfiling",
        "showHiddenMetricsForVersion", "serviceProxyName", "mode", "iptables", "ipvs", "nftables", "winkernel",
        "detectLocalMode", "detectLocal", "clusterCIDR", "nodePortAddresses", "oomScoreAdj", "conntrack",
        "configSyncPeriod", "portRange", "masqueradeAll",
    ]

    private static let knownNFTablesFields: Set<String> = [
        "masqueradeBit", "masqueradeAll", "syncPeriod", "minSyncPeriod", "tableName",
    ]

    private mutating func apply(_ root: Field, notes: inout [String]) throws(FieldError) {
        guard root.isMapping else {
            throw FieldError(field: "--config", message: "expected a KubeProxyConfiguration mapping, got \(root.summary)")
        }
        let apiVersion = try root["apiVersion"].string() ?? ""
        guard apiVersion == "kubeproxy.config.k8s.io/v1alpha1" else {
            throw FieldError(field: "apiVersion", message: "must be kubeproxy.config.k8s.io/v1alpha1, got \(quoted(apiVersion))")
        }
        let kind = try root["kind"].string() ?? ""
        guard kind == "KubeProxyConfiguration" else {
            throw FieldError(field: "kind", message: "must be KubeProxyConfiguration, got \(quoted(kind))")
        }
        for key in try root.keys() where !Self.knownFields.contains(key) {
            notes.append("unknown field \(key) ignored")
        }

        let mode = try root["mode"].string() ?? ""
        guard mode.isEmpty || mode == "nftables" else {
            throw try root["mode"].error("\(quoted(mode)) is not supported: nftproxy implements the nftables mode only (use nftables or leave it empty)")
        }
        if let host = try root["hostnameOverride"].string()?.trimmed.lowercased(), !host.isEmpty {
            nodeName = host
        }
        // 0.0.0.0 and :: are kube-proxy's "not set": the node IPs then come from the Node object.
        if let address = try root["bindAddress"].nonEmptyString() {
            guard let ip = IPAddress(address.trimmed) else {
                throw try root["bindAddress"].error("\(quoted(address)) is not an IP address (it is the node's primary IP, without a port)")
            }
            if !ip.isUnspecified { nodeIPs = [ip] }
        }
        if let text = try root["clusterCIDR"].string() {
            clusterCIDRs = try fieldValue { () throws(ConfigError) in try Self.parseClusterCIDRs(text, field: "clusterCIDR") }
        }
        let portAddresses = try root["nodePortAddresses"]
        if !portAddresses.isAbsent {
            let values = try portAddresses.list().map { (entry) throws(FieldError) in try entry.required(entry.string()) }
            nodePortAddresses = try fieldValue { () throws(ConfigError) in
                try Self.parseNodePortAddresses(values, field: "nodePortAddresses")
            }
        }
        /// A `host:port` bind address, checked unless empty; nil when absent.
        func bindAddress(_ key: StaticString) throws(FieldError) -> String? {
            guard let address = try root[key].string() else { return nil }
            if !address.isEmpty {
                try fieldValue { () throws(ConfigError) in try Self.validateHostPort(address, field: key.description) }
            }
            return address
        }
        if let address = try bindAddress("healthzBindAddress") { healthzBindAddress = address }
        if let address = try bindAddress("metricsBindAddress") { metricsBindAddress = address }
        try applyDetectLocalMode(root["detectLocalMode"], notes: &notes)

        let nftables = try root["nftables"]
        for key in try nftables.keys() where !Self.knownNFTablesFields.contains(key) {
            notes.append("unknown field nftables.\(key) ignored")
        }
        // Either spelling turns masquerade-all on; the nftables one is what v1alpha1 defines.
        let masquerade = [try root["masqueradeAll"].bool(), try nftables["masqueradeAll"].bool()].compactMap { $0 }
        if !masquerade.isEmpty { masqueradeAll = masquerade.contains(true) }
        let bit = try nftables["masqueradeBit"]
        if let value = try bit.int() {
            guard (0...31).contains(value) else { throw bit.error("\(value) is out of range 0-31") }
            masqueradeBit = value
        }
        if let table = try nftables["tableName"].nonEmptyString() {
            notes.append("nftables.tableName \(quoted(table)) ignored: nftproxy names its own tables")
        }
        let syncField = try nftables["syncPeriod"]
        let minSyncField = try nftables["minSyncPeriod"]
        if let text = try syncField.string() {
            // kubeadm writes `0s` for "not set": kube-proxy then uses the default.
            let value = try fieldValue { () throws(ConfigError) in
                try Self.parsePeriod(text, field: syncField.path, allowZero: true)
            }
            if value > 0 { syncPeriod = value }
        }
        if let text = try minSyncField.string() {
            minSyncPeriod = try fieldValue { () throws(ConfigError) in
                try Self.parsePeriod(text, field: minSyncField.path, allowZero: true)
            }
        }
        if minSyncPeriod > syncPeriod {
            let blamed = minSyncField.isAbsent ? syncField : minSyncField
            throw blamed.error(
                "minSyncPeriod (\(Self.seconds(minSyncPeriod))) must not be longer than syncPeriod (\(Self.seconds(syncPeriod)))")
        }
    }

    /// kube-proxy's local-traffic detectors; nftproxy has the ClusterCIDR one only.
    private func applyDetectLocalMode(_ field: Field, notes: inout [String]) throws(FieldError) {
        guard try !(field.string() ?? "").isEmpty else { return }
        let modes = ["ClusterCIDR": true, "NodeCIDR": false, "BridgeInterface": false, "InterfaceNamePrefix": false] as KeyValuePairs
        if try field.oneOf(modes, what: "detectLocalMode") == false, let mode = try field.string() {
            notes.append("detectLocalMode \(mode) is not supported, ignored: local traffic is detected by clusterCIDR")
        }
    }

    /// `30s`, `0.5s`: a period for a message.
    private static func seconds(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? "\(Int(value))s" : "\(value)s"
    }
}

/// Runs a `FieldError`-throwing parser where a `ConfigError` is expected (the public helpers).
private func configValue<Value>(_ body: () throws(FieldError) -> Value) throws(ConfigError) -> Value {
    do throws(FieldError) {
        return try body()
    } catch {
        throw ConfigError(field: error.field, message: error.message)
    }
}

/// The reverse: a public `ConfigError` helper used inside the `FieldError` reader.
@discardableResult
private func fieldValue<Value>(_ body: () throws(ConfigError) -> Value) throws(FieldError) -> Value {
    do throws(ConfigError) {
        return try body()
    } catch {
        throw FieldError(field: error.field, message: error.message)
    }
}
