/// Per-kind decoding and validation. Each decoder throws at the first bad field (the object is
/// then skipped whole) and appends to `notes` what it ignored on purpose. Field paths are relative
/// to the object, as `kubectl explain` spells them.

enum ObjectDecoder {
    // MARK: Service

    static func service(_ object: Field, notes: inout [FieldError]) throws(FieldError) -> Service? {
        let metadata = try Metadata(object, namespaced: true, nameRule: .label)
        let spec = try object["spec"]
        let type = try spec["type"].oneOf(
            ["ClusterIP": ServiceType.clusterIP, "NodePort": .nodePort, "LoadBalancer": .loadBalancer,
             "ExternalName": .externalName],
            what: "service type") ?? .clusterIP
        let ipFamilies = try families(spec["ipFamilies"])
        let (clusterIPs, isHeadless) = try clusterIPs(spec, ipFamilies: ipFamilies)
        let ports = try servicePorts(spec["ports"])
        let externalIPs = try spec["externalIPs"].list().map { (field) throws(FieldError) in
            try field.required(field.ipAddress())
        }
        let sourceRanges = try spec["loadBalancerSourceRanges"].list().map { (field) throws(FieldError) in
            try field.required(field.cidr())
        }
        let policies = ["Cluster": TrafficPolicy.cluster, "Local": .local] as KeyValuePairs
        let externalPolicy = try spec["externalTrafficPolicy"].oneOf(policies, what: "externalTrafficPolicy")
        let internalPolicy = try spec["internalTrafficPolicy"].oneOf(policies, what: "internalTrafficPolicy")
        return Service(
            namespace: metadata.namespace, name: metadata.name, labels: metadata.labels, type: type,
            clusterIPs: clusterIPs, isHeadless: isHeadless, ipFamilies: ipFamilies, ports: ports,
            selector: try spec["selector"].stringMap(), externalIPs: externalIPs,
            loadBalancerIngress: try loadBalancerIngress(object["status"]["loadBalancer"]["ingress"]),
            loadBalancerSourceRanges: sourceRanges, sessionAffinity: try sessionAffinity(spec),
            externalTrafficPolicy: externalPolicy ?? .cluster, internalTrafficPolicy: internalPolicy ?? .cluster,
            healthCheckNodePort: try spec["healthCheckNodePort"].port(allowZero: true) ?? 0,
            externalName: try spec["externalName"].string()
        )
    }

    /// `spec.clusterIPs`, or `spec.clusterIP` when the list is absent. `None` means headless.
    private static func clusterIPs(_ spec: Field, ipFamilies: [IPFamily]) throws(FieldError) -> ([IPAddress], Bool) {
        let single = try spec["clusterIP"]
        let list = try spec["clusterIPs"].list()
        let entries = list.isEmpty ? (single.isAbsent ? [] : [single]) : list
        var addresses: [IPAddress] = []
        for (index, entry) in entries.enumerated() {
            let text = try entry.string() ?? ""
            if text == "None" {
                guard entries.count == 1 else {
                    throw entry.error("\"None\" (headless) cannot be combined with other cluster IPs")
                }
                return ([], true)
            }
            if text.isEmpty && entries.count == 1 { return ([], false) }
            let address = try entry.required(entry.ipAddress())
            if addresses.contains(where: { $0.family == address.family }) {
                throw entry.error("second \(address.family) address \(address): a service has at most one cluster IP per family")
            }
            if index < ipFamilies.count && ipFamilies[index] != address.family {
                throw entry.error("\(address) is \(address.family) but spec.ipFamilies[\(index)] is \(ipFamilies[index])")
            }
            addresses.append(address)
        }
        // Both fields set: the API server keeps clusterIP equal to clusterIPs[0].
        if !list.isEmpty, let text = try single.string(), !text.isEmpty {
            let matches = text == "None" ? addresses.isEmpty : IPAddress(text) == addresses.first
            if !matches {
                throw single.error("\(quoted(text)) does not match spec.clusterIPs[0]")
            }
        }
        return (addresses, false)
    }

    /// `spec.ipFamilies`: at most one of each family.
    private static func families(_ field: Field) throws(FieldError) -> [IPFamily] {
        var families: [IPFamily] = []
        for entry in try field.list() {
            let family = try entry.required(entry.oneOf(["IPv4": IPFamily.ipv4, "IPv6": .ipv6], what: "IP family"))
            if families.contains(family) { throw entry.error("\(family) is listed twice") }
            families.append(family)
        }
        return families
    }

    private static func servicePorts(_ field: Field) throws(FieldError) -> [ServicePort] {
        let entries = try field.list()
        var ports: [ServicePort] = []
        var seen: [PortIdentity: Field] = [:]  // → the port that used it first; one port repeats nothing
        if entries.count > 1 { seen.reserveCapacity(entries.count * 3) }
        for entry in entries {
            let name = try entry["name"].name(.portName) ?? ""
            if name.isEmpty && entries.count > 1 {
                throw try entry["name"].error("is required when a service has more than one port")
            }
            let proto = try entry["protocol"].l4Protocol()
            let port = try entry["port"].required(entry["port"].port())
            let targetPort = try Self.targetPort(entry["targetPort"]) ?? .number(port)
            let nodePort = try entry["nodePort"].port(allowZero: true) ?? 0
            // Duplicates would give two verdict-map elements with one key: the kernel rejects the batch.
            func claim(_ identity: PortIdentity) throws(FieldError) {
                guard entries.count > 1 else { return }
                if let first = seen[identity] { throw entry.error("duplicate \(identity) (also \(first.path))") }
                seen[identity] = entry
            }
            if !name.isEmpty { try claim(.name(name)) }
            try claim(.port(port, proto))
            if nodePort != 0 { try claim(.nodePort(nodePort, proto)) }
            ports.append(ServicePort(name: name, protocol: proto, port: port, targetPort: targetPort, nodePort: nodePort))
        }
        return ports
    }

    /// What two ports of one service must not share, spelled as a message names it.
    private enum PortIdentity: Hashable, CustomStringConvertible {
        case name(String)
        case port(UInt16, L4Protocol)
        case nodePort(UInt16, L4Protocol)

        var description: String {
            switch self {
            case .name(let name): "name \(quoted(name))"
            case .port(let port, let proto): "port \(port)/\(proto.rawValue)"
            case .nodePort(let port, let proto): "nodePort \(port)/\(proto.rawValue)"
            }
        }
    }

    /// An int-or-string: a number (0 means "same as port", as the API server defaults it) or a
    /// container port name.
    private static func targetPort(_ field: Field) throws(FieldError) -> TargetPort? {
        if field.isAbsent { return nil }
        if field.isPlainInteger {
            let number = try field.required(field.port(allowZero: true))
            return number == 0 ? nil : .number(number)
        }
        let name = try field.required(field.name(.portName))
        if parseDecimal(name) != nil {
            throw field.error("\(quoted(name)) is a quoted number: write it unquoted for a port number, or use a container port name")
        }
        return .name(name)
    }

    /// `status.loadBalancer.ingress`; hostname-only entries are left out (no rules for them).
    private static func loadBalancerIngress(_ field: Field) throws(FieldError) -> [LoadBalancerIngress] {
        var ingress: [LoadBalancerIngress] = []
        for entry in try field.list() {
            let ipField = try entry["ip"]
            guard let text = try ipField.string(), !text.isEmpty else { continue }
            guard let ip = IPAddress(text) else { throw ipField.error("\(quoted(text)) is not an IP address") }
            let mode = try entry["ipMode"].oneOf(["VIP": LoadBalancerIPMode.vip, "Proxy": .proxy], what: "ipMode")
            ingress.append(LoadBalancerIngress(ip: ip, ipMode: mode))
        }
        return ingress
    }

    private static func sessionAffinity(_ spec: Field) throws(FieldError) -> SessionAffinity {
        let clientIP = try spec["sessionAffinity"].oneOf(["None": false, "ClientIP": true], what: "sessionAffinity") ?? false
        guard clientIP else { return .none }
        let timeout = try spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"]
        let seconds = try timeout.int() ?? 10800
        guard (1...86400).contains(seconds) else { throw timeout.error("\(seconds) is out of range 1-86400") }
        return .clientIP(timeoutSeconds: seconds)
    }

    // MARK: EndpointSlice

    static func endpointSlice(_ object: Field, notes: inout [FieldError]) throws(FieldError) -> EndpointSlice? {
        let metadata = try Metadata(object, namespaced: true, nameRule: .subdomain)
        let labelPath = "metadata.labels[\"kubernetes.io/service-name\"]"
        guard let serviceName = metadata.labels["kubernetes.io/service-name"], !serviceName.isEmpty else {
            throw FieldError(field: labelPath, message: "is missing: it names the service the slice belongs to")
        }
        if let violation = NameRule.label.violation(serviceName) { throw FieldError(field: labelPath, message: violation) }

        let addressTypeField = try object["addressType"]
        let addressType = try addressTypeField.required(
            addressTypeField.oneOf(["IPv4": IPFamily?.some(.ipv4), "IPv6": .ipv6, "FQDN": nil], what: "addressType"))
        guard let family = addressType else {
            notes.append(addressTypeField.error("FQDN slices carry no addresses a proxy can use, ignored"))
            return nil
        }

        let entries = try object["endpoints"].list()
        var endpoints: [Endpoint] = []
        endpoints.reserveCapacity(entries.count)
        for entry in entries {
            var addresses: [IPAddress] = []
            try entry["addresses"].forEach { (field) throws(FieldError) in
                let address = try field.required(field.ipAddress())
                guard address.family == family else {
                    throw field.error("EndpointSlice addressType \(family) but \(field.path) is \(address.family) \(address)")
                }
                addresses.append(address)
            }
            if addresses.isEmpty { continue }  // kube-proxy ignores an endpoint with no address
            let conditions = try entry["conditions"]
            let hints = try entry["hints"]
            endpoints.append(Endpoint(
                addresses: addresses,
                conditions: EndpointConditions(
                    ready: try conditions["ready"].bool() ?? true,
                    serving: try conditions["serving"].bool() ?? true,
                    terminating: try conditions["terminating"].bool() ?? false),
                nodeName: try entry["nodeName"].nonEmptyString(),
                zone: try entry["zone"].nonEmptyString(),
                hintZones: try hintNames(hints["forZones"]),
                hintNodes: try hintNames(hints["forNodes"])
            ))
        }

        var ports: [EndpointPort] = []
        for entry in try object["ports"].list() {
            let name = try entry["name"].name(.portName) ?? ""
            let proto = try entry["protocol"].l4Protocol()
            let portField = try entry["port"]
            guard let port = try portField.port(allowZero: true), port != 0 else {
                notes.append(portField.error("no port number, this port is ignored"))
                continue
            }
            if ports.contains(where: { $0.name == name && $0.protocol == proto }) {
                throw entry.error("duplicate port \(quoted(name))/\(proto.rawValue)")
            }
            ports.append(EndpointPort(name: name, protocol: proto, port: port))
        }
        return EndpointSlice(
            namespace: metadata.namespace, name: metadata.name, serviceName: serviceName,
            addressType: family, endpoints: endpoints, ports: ports)
    }

    /// `hints.forZones[].name` / `hints.forNodes[].name`; nil when there are none.
    private static func hintNames(_ field: Field) throws(FieldError) -> [String]? {
        let names = try field.list().map { (hint) throws(FieldError) in try hint["name"].requiredString() }
        return names.isEmpty ? nil : names
    }

    // MARK: Pod

    static func pod(_ object: Field, notes: inout [FieldError]) throws(FieldError) -> Pod? {
        let metadata = try Metadata(object, namespaced: true, nameRule: .subdomain)
        let spec = try object["spec"]
        let status = try object["status"]

        let listed = try status["podIPs"].list()
        let ipFields = try listed.isEmpty ? [status["podIP"]] : listed.map { (entry) throws(FieldError) in try entry["ip"] }
        var podIPs: [IPAddress] = []
        for field in ipFields {
            guard let text = try field.string(), !text.isEmpty else { continue }
            let address = try field.required(field.ipAddress())
            if podIPs.contains(where: { $0.family == address.family }) {
                throw field.error("second \(address.family) address \(address): a pod has at most one IP per family")
            }
            podIPs.append(address)
        }

        var ready = false
        for condition in try status["conditions"].list() where try condition["type"].string() == "Ready" {
            ready = try condition["status"].string() == "True"
        }

        var containerPorts: [ContainerPort] = []
        for container in try spec["containers"].list() {
            for entry in try container["ports"].list() {
                containerPorts.append(ContainerPort(
                    name: try entry["name"].name(.portName) ?? "",
                    protocol: try entry["protocol"].l4Protocol(),
                    containerPort: try entry["containerPort"].required(entry["containerPort"].port())))
            }
        }

        let phase = try status["phase"].string()
        return Pod(
            namespace: metadata.namespace, name: metadata.name, labels: metadata.labels, podIPs: podIPs,
            nodeName: try spec["nodeName"].nonEmptyString(), ready: ready,
            terminating: try !object["metadata"]["deletionTimestamp"].isAbsent,
            finished: phase == "Succeeded" || phase == "Failed",
            containerPorts: containerPorts)
    }

    // MARK: Node

    static func node(_ object: Field, notes: inout [FieldError]) throws(FieldError) -> Node? {
        let metadata = try Metadata(object, namespaced: false, nameRule: .subdomain)
        var addresses: [NodeAddress] = []
        for entry in try object["status"]["addresses"].list() {
            // Hostname and DNS entries hold names, not IPs: only the IP types matter here.
            guard let type = try entry["type"].string(), type.hasSuffix("IP") else { continue }
            let address = try entry["address"].required(entry["address"].ipAddress())
            addresses.append(NodeAddress(type: type, address: address))
        }
        let spec = try object["spec"]
        let cidrs = try spec["podCIDRs"].list()
        let podCIDRs = try uniqueFamilies(cidrs.isEmpty ? [spec["podCIDR"]] : cidrs, what: "pod CIDR")
        return Node(name: metadata.name, labels: metadata.labels, addresses: addresses, podCIDRs: podCIDRs)
    }

    // MARK: ServiceCIDR

    static func serviceCIDR(_ object: Field, notes: inout [FieldError]) throws(FieldError) -> ServiceCIDR? {
        let metadata = try Metadata(object, namespaced: false, nameRule: .subdomain)
        let cidrs = try object["spec"]["cidrs"]
        let list = try uniqueFamilies(cidrs.list(), what: "CIDR")
        if list.isEmpty { throw cidrs.error("is required") }
        return ServiceCIDR(name: metadata.name, cidrs: list)
    }

    /// CIDRs where each family appears at most once (the dual-stack rule); absent entries are skipped.
    private static func uniqueFamilies(_ fields: [Field], what: String) throws(FieldError) -> [CIDR] {
        var cidrs: [CIDR] = []
        for field in fields {
            guard let cidr = try field.cidr() else { continue }
            if cidrs.contains(where: { $0.family == cidr.family }) {
                throw field.error("second \(cidr.family) \(what) \(cidr): at most one per family")
            }
            cidrs.append(cidr)
        }
        return cidrs
    }
}

/// The `metadata` fields every kind shares, validated.
private struct Metadata {
    var namespace: String
    var name: String
    var labels: [String: String]

    init(_ object: Field, namespaced: Bool, nameRule: NameRule) throws(FieldError) {
        let metadata = try object["metadata"]
        let nameField = try metadata["name"]
        guard try !(nameField.string() ?? "").isEmpty else { throw nameField.error("is required") }
        name = try nameField.required(nameField.name(nameRule))
        let namespace = namespaced ? try metadata["namespace"].name(.label) ?? "" : ""
        self.namespace = namespaced && namespace.isEmpty ? "default" : namespace
        labels = try metadata["labels"].stringMap() ?? [:]
    }
}

extension Field {
    /// `value`, or a "is required" error for this field.
    func required<Value>(_ value: Value?) throws(FieldError) -> Value {
        guard let value else { throw error("is required") }
        return value
    }

    /// A string where empty means unset (`nodeName: ""`).
    func nonEmptyString() throws(FieldError) -> String? {
        guard let text = try string(), !text.isEmpty else { return nil }
        return text
    }
}
