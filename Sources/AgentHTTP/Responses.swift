internal import NftIR
internal import NftText
internal import ProxyController
internal import RuleCompiler

/// An HTTP answer before it meets the wire: what each path says is decided here, without I/O,
/// so it can be read (and tested) apart from the server.
struct Reply: Sendable {
    var status: Int
    var headers: [(String, String)]
    var body: String

    static func json(_ status: Int, _ body: String, extra: [(String, String)] = []) -> Reply {
        Reply(status: status, headers: [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff")] + extra,
              body: body)
    }

    static func text(_ status: Int, _ body: String, contentType: String = "text/plain; charset=utf-8") -> Reply {
        Reply(status: status, headers: [("Content-Type", contentType), ("X-Content-Type-Options", "nosniff")], body: body)
    }

    /// Go's `http.NotFound`, which kube-proxy's muxes answer for any other path.
    static let notFound = Reply.text(404, "404 page not found\n")
}

/// One reading of both clocks, taken once per request, so every time in a reply agrees.
struct Now: Sendable {
    var instant: ContinuousClock.Instant
    /// Time since the Unix epoch (CLOCK_REALTIME).
    var wall: Duration

    /// The wall time of an earlier (or later) instant of the continuous clock.
    func wall(of other: ContinuousClock.Instant) -> Duration { wall - (instant - other) }
}

/// What kube-proxy's health server answers (pkg/proxy/healthcheck/proxy_health.go, the
/// `ProxyHealth` JSON of current releases): `lastUpdated`, `currentTime`, `nodeEligible` (only on
/// `/healthz`), `healthy`, and `status` per IP family once rules were written.
enum HealthReplies {
    /// `/healthz` and `/livez`. `nodeEligible` is nil for `/livez`, which ignores the Node.
    static func health(snapshot: AgentStatus.Snapshot, proxyHealthy: Bool, nodeEligible: Bool?, now: Now) -> Reply {
        let healthy = proxyHealthy && (nodeEligible ?? true)
        let lastUpdated = snapshot.lastUpdated.map { now.wall(of: $0) }
        // When healthy, lastUpdated is "now": older releases reported the last loop run there.
        var body = "{\"lastUpdated\":\(quoted(rfc3339(healthy ? now.wall : lastUpdated))),"
        body += "\"currentTime\":\(quoted(rfc3339(now.wall))),"
        if let nodeEligible { body += "\"nodeEligible\":\(nodeEligible)," }
        body += "\"healthy\":\(proxyHealthy)"
        if let lastUpdated {
            // Both tables (ip and ip6 nftproxy) are written in one batch, so both families share
            // one last-update time and one health.
            let family = "{\"lastUpdated\":\(quoted(rfc3339(lastUpdated))),\"healthy\":\(proxyHealthy)}"
            body += ",\"status\":{\"IPv4\":\(family),\"IPv6\":\(family)}"
        }
        body += "}"
        return .json(healthy ? 200 : 503, body)
    }

    /// A Service's `healthCheckNodePort` (pkg/proxy/healthcheck/service_health.go): 200 only when
    /// the node has a ready endpoint of the service and the agent is healthy, so a cloud load
    /// balancer sends this node traffic only if it can deliver it locally.
    static func serviceHealth(_ check: HealthCheck, proxyHealthy: Bool) -> Reply {
        let count = check.localEndpoints
        let body = """
            {
            \t"service": {
            \t\t"namespace": \(quoted(check.service.namespace)),
            \t\t"name": \(quoted(check.service.name))
            \t},
            \t"localEndpoints": \(count),
            \t"serviceProxyHealthy": \(proxyHealthy)
            }
            """
        return .json(count > 0 && proxyHealthy ? 200 : 503, body,
                     extra: [("X-Load-Balancing-Endpoint-Weight", String(count))])
    }
}

/// The metrics server's paths: kube-proxy's `/metrics`, `/healthz` and `/proxyMode`, plus dumps
/// of what the kernel holds and of the batch it last refused.
enum MetricsReplies {
    static func reply(path: String, metrics: Metrics, snapshot: () -> AgentStatus.Snapshot) -> Reply {
        switch path {
        case "/metrics":
            return .text(200, metrics.exposition(), contentType: "text/plain; version=0.0.4; charset=utf-8")
        case "/healthz":
            return .text(200, "ok")
        case "/proxyMode":
            return .text(200, "nftables")
        case "/debug/ruleset":
            let current = snapshot()
            guard let ruleset = current.lastApplied else {
                if current.changing {
                    return .text(503, "nftproxy is changing its rules right now (a sync, or its retry after a failure); ask again shortly\n")
                }
                return .text(404, "no ruleset has been applied yet\n")
            }
            return .text(200, NftText.script(ruleset))
        case "/debug/last-failure":
            guard let (error, transaction) = snapshot().lastFailure else {
                return .text(404, "the kernel has refused no batch since the agent started\n")
            }
            let reason = "\(error)".split(whereSeparator: \.isNewline).joined(separator: " ")
            return .text(200, "# error: \(reason)\n" + NftText.commands(transaction))
        default:
            return .notFound
        }
    }
}

/// A JSON string literal (the characters JSON requires escaped, nothing else).
func quoted(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

/// Go's `time.RFC3339Nano` in UTC, as `json.Marshal` writes a `time.Time`: trailing zeros of the
/// fraction dropped, no fraction for a whole second. `nil` is Go's zero time.
func rfc3339(_ sinceEpoch: Duration?) -> String {
    guard let sinceEpoch else { return "0001-01-01T00:00:00Z" }
    let (seconds, attoseconds) = sinceEpoch.components
    var whole = seconds
    var nanos = attoseconds / 1_000_000_000
    if nanos < 0 {
        whole -= 1
        nanos += 1_000_000_000
    }
    var days = whole / 86400
    var secondOfDay = whole % 86400
    if secondOfDay < 0 {
        secondOfDay += 86400
        days -= 1
    }
    // Civil date from days since 1970-01-01 (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let dayOfEra = z - era * 146_097
    let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
    let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
    let mp = (5 * dayOfYear + 2) / 153
    let day = dayOfYear - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)

    func pad(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
    var out = "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T"
    out += "\(pad(secondOfDay / 3600, 2)):\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2))"
    if nanos > 0 {
        var fraction = pad(nanos, 9)
        while fraction.hasSuffix("0") { fraction.removeLast() }
        out += "." + fraction
    }
    return out + "Z"
}
