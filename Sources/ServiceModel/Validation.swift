/// The value rules the decoders share. Names are checked because they end up in nftables chain
/// names and comments, where an overlong or odd name would make the kernel reject the whole batch.

/// Kubernetes name rules, with the limits kube-proxy's chain naming relies on.
enum NameRule {
    /// DNS-1123 label: namespaces and Service names (at most 63 characters).
    case label
    /// DNS-1123 subdomain: Pod, Node, EndpointSlice and ServiceCIDR names (at most 253 characters).
    case subdomain
    /// A Service or EndpointSlice port name: a DNS-1123 label (at most 63 characters). The longest
    /// chain name this allows, `external-` + ns/name/proto/port, is 205 bytes: within NFT_NAME_MAXLEN.
    case portName

    /// Why `name` breaks the rule, or nil when it is valid.
    func violation(_ name: String) -> String? {
        switch self {
        case .label:
            if name.utf8.count > 63 { return "\(quoted(name)) is longer than 63 characters" }
            if !Self.holds(name, Self.isLabel) { return "\(quoted(name)) is not a valid name: \(Self.labelHint)" }
        case .portName:
            // kubectl prints an unnamed port as `name: ""`: that is no name, not a bad one.
            if name.isEmpty { return nil }
            if name.utf8.count > 63 { return "\(quoted(name)) is longer than 63 characters" }
            if !Self.holds(name, Self.isLabel) { return "\(quoted(name)) is not a valid port name: \(Self.labelHint)" }
        case .subdomain:
            if name.utf8.count > 253 { return "\(quoted(name)) is longer than 253 characters" }
            if !Self.holds(name, Self.isSubdomain) {
                return "\(quoted(name)) is not a valid name: use lowercase letters, digits, '-' and '.', "
                    + "starting and ending with a letter or digit"
            }
        }
        return nil
    }

    private static let labelHint = "use lowercase letters, digits and '-', starting and ending with a letter or digit"

    /// Checks `name` as UTF-8 bytes: only ASCII names are valid, and every object has names to
    /// check, so `Character`s would cost too much.
    private static func holds(_ name: String, _ rule: (UnsafeBufferPointer<UInt8>) -> Bool) -> Bool {
        name.utf8.withContiguousStorageIfAvailable(rule) ?? Array(name.utf8).withUnsafeBufferPointer(rule)
    }

    private static func isLabel(_ text: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let first = text.first, let last = text.last else { return false }
        func alnum(_ byte: UInt8) -> Bool { (0x61...0x7a).contains(byte) || (0x30...0x39).contains(byte) }
        return alnum(first) && alnum(last) && text.allSatisfy { alnum($0) || $0 == 0x2d }
    }

    /// Labels joined by dots.
    private static func isSubdomain(_ text: UnsafeBufferPointer<UInt8>) -> Bool {
        var labelStart = 0
        for end in 0...text.count where end == text.count || text[end] == UInt8(ascii: ".") {
            guard isLabel(UnsafeBufferPointer(rebasing: text[labelStart..<end])) else { return false }
            labelStart = end + 1
        }
        return true
    }
}

extension Field {
    /// A name checked against `rule`; nil when absent.
    func name(_ rule: NameRule) throws(FieldError) -> String? {
        guard let text = try string() else { return nil }
        if let violation = rule.violation(text) { throw error(violation) }
        return text
    }

    /// An IP address in any form Kubernetes accepts (IPv4 leading zeros included), canonicalised.
    func ipAddress() throws(FieldError) -> IPAddress? {
        // Most are valid: those are read from the document's bytes, without making a String.
        if let address = scalarBytes(IPAddress.init(utf8:)) ?? nil { return address }
        guard let text = try string() else { return nil }
        guard let address = IPAddress(text) else { throw error("\(quoted(text)) is not an IP address") }
        return address
    }

    /// A prefix in `address/length` form. A bare address is refused, as Kubernetes refuses it,
    /// because a missing length is more often a mistake than a meant host route.
    func cidr() throws(FieldError) -> CIDR? {
        guard let text = try string() else { return nil }
        return try parseCIDR(text, field: path)
    }

    /// A port number: `1...65535`, or also 0 (meaning unset) when `allowZero`.
    func port(allowZero: Bool = false) throws(FieldError) -> UInt16? {
        guard let value = try int() else { return nil }
        let range = allowZero ? 0...65535 : 1...65535
        guard range.contains(value) else {
            throw error("\(value) is out of range \(range.lowerBound)-\(range.upperBound)")
        }
        return UInt16(value)
    }

    /// TCP, UDP or SCTP; TCP when absent, as the API server defaults it.
    func l4Protocol() throws(FieldError) -> L4Protocol {
        try oneOf(["TCP": L4Protocol.tcp, "UDP": .udp, "SCTP": .sctp], what: "protocol") ?? .tcp
    }
}

/// Parses `address/length` (whitespace around it tolerated), throwing a `FieldError` for `field`.
func parseCIDR(_ text: String, field: String) throws(FieldError) -> CIDR {
    let trimmed = text.trimmed
    guard trimmed.utf8.contains(UInt8(ascii: "/")), let cidr = CIDR(trimmed) else {
        throw FieldError(field: field, message: "\(quoted(text)) is not a CIDR (expected address/length, e.g. 10.0.0.0/16)")
    }
    return cidr
}
