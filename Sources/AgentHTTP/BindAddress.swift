internal import ServiceModel

/// An `IP:port` to listen on, as kube-proxy's `healthzBindAddress` and `metricsBindAddress`
/// spell it: `0.0.0.0:10256`, `127.0.0.1:10249`, `[::]:10256`, or `:10256` for every IPv4
/// address. The host must be an IP literal; nothing is resolved.
public struct BindAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    /// kube-proxy's defaults.
    public static let defaultHealthz = BindAddress(host: "0.0.0.0", port: 10256)
    public static let defaultMetrics = BindAddress(host: "127.0.0.1", port: 10249)

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `IP:port`. An empty string is `nil`: that server is disabled.
    public static func parse(_ text: String) throws(AgentHTTPError) -> BindAddress? {
        guard !text.isEmpty else { return nil }
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw .invalidAddress(text, reason: "expected [IPv6]:port")
            }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw .invalidAddress(text, reason: "expected IP:port") }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
            if host.contains(":") { throw .invalidAddress(text, reason: "write an IPv6 address in brackets, as [::1]:port") }
        }
        guard let number = Int(port), (0...65535).contains(number) else {
            throw .invalidAddress(text, reason: "the port must be a number from 0 to 65535")
        }
        let address = BindAddress(host: host.isEmpty ? "0.0.0.0" : String(host), port: number)
        guard address.isIPLiteral else { throw .invalidAddress(text, reason: "\(address.host) is not an IP address") }
        return address
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Why a server could not be started or an address not used. The text names the address, so
/// the CLI can print it as it is.
public enum AgentHTTPError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A bind address that does not parse.
    case invalidAddress(String, reason: String)
    /// Listening failed (address in use, not a local address, no permission …).
    case bindFailed(server: String, address: String, reason: String)

    public var description: String {
        switch self {
        case .invalidAddress(let text, let reason): "invalid bind address \"\(text)\": \(reason)"
        case .bindFailed(let server, let address, let reason): "cannot listen on \(address) for \(server): \(reason)"
        }
    }
}

extension BindAddress {
    var isIPLiteral: Bool { IPAddress(host) != nil }
}
