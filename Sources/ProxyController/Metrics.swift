import Synchronization

/// The agent's metrics, exposed in the Prometheus text format. kube-proxy's names are used
/// where the meaning is the same, so existing dashboards and alerts keep working.
public final class Metrics: Sendable {
    public enum Name: String, Sendable, CaseIterable {
        case syncDuration = "kubeproxy_sync_proxy_rules_duration_seconds"
        case lastSync = "kubeproxy_sync_proxy_rules_last_timestamp_seconds"
        case programmingLatency = "kubeproxy_network_programming_duration_seconds"
        case syncFailures = "kubeproxy_sync_proxy_rules_nftables_sync_failures_total"
        case noLocalEndpoints = "kubeproxy_sync_proxy_rules_no_local_endpoints_total"
        case driftRepairs = "nftproxy_drift_repairs_total"
        case quarantined = "nftproxy_quarantined_objects"
        case batchOperations = "nftproxy_batch_operations"
        case skippedObjects = "nftproxy_skipped_objects"

        var help: String {
            switch self {
            case .syncDuration: "SyncProxyRules latency in seconds"
            case .lastSync: "The last time proxy rules were successfully synced"
            case .programmingLatency: "In-cluster network programming latency in seconds: from a change seen to the kernel's ack"
            case .syncFailures: "Number of nftables batches the kernel refused"
            case .noLocalEndpoints: "Services with a Local traffic policy and no local endpoints, by traffic_policy"
            case .driftRepairs: "Times nftproxy found its tables changed by someone else and restored them"
            case .quarantined: "Services left out of the rules because the kernel refused them"
            case .batchOperations: "Operations in the last committed batch"
            case .skippedObjects: "Input objects skipped as invalid in the last sync"
            }
        }

        var type: String {
            switch self {
            case .syncDuration, .programmingLatency: "histogram"
            case .syncFailures, .driftRepairs: "counter"
            default: "gauge"
            }
        }
    }

    /// Histogram bucket bounds in seconds (kube-proxy's exponential 1 ms … ~16 s).
    static let buckets: [Double] = (0..<15).map { 0.001 * Double(1 << $0) }

    private struct Histogram: Sendable {
        var counts = [UInt64](repeating: 0, count: Metrics.buckets.count)
        var sum = 0.0
        var count: UInt64 = 0
    }

    private let values = Mutex<(scalars: [String: Double], histograms: [String: Histogram])>(([:], [:]))

    public init() {}

    private static func key(_ name: Name, _ labels: [String: String]) -> String {
        guard !labels.isEmpty else { return name.rawValue }
        let text = labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\($0.value)\"" }.joined(separator: ",")
        return "\(name.rawValue){\(text)}"
    }

    public func increment(_ name: Name, by amount: Double = 1, labels: [String: String] = [:]) {
        values.withLock { $0.scalars[Metrics.key(name, labels), default: 0] += amount }
    }

    public func set(_ name: Name, _ value: Double, labels: [String: String] = [:]) {
        values.withLock { $0.scalars[Metrics.key(name, labels)] = value }
    }

    public func observe(_ name: Name, _ seconds: Double) {
        values.withLock { state in
            var histogram = state.histograms[name.rawValue] ?? Histogram()
            for (index, bound) in Metrics.buckets.enumerated() where seconds <= bound { histogram.counts[index] += 1 }
            histogram.sum += seconds
            histogram.count += 1
            state.histograms[name.rawValue] = histogram
        }
    }

    public func value(_ name: Name, labels: [String: String] = [:]) -> Double? {
        values.withLock { $0.scalars[Metrics.key(name, labels)] }
    }

    public func observations(_ name: Name) -> UInt64 {
        values.withLock { $0.histograms[name.rawValue]?.count ?? 0 }
    }

    /// The Prometheus text exposition (version 0.0.4).
    public func exposition() -> String {
        let (scalars, histograms) = values.withLock { ($0.scalars, $0.histograms) }
        var out = ""
        for name in Name.allCases {
            out += "# HELP \(name.rawValue) \(name.help)\n# TYPE \(name.rawValue) \(name.type)\n"
            if name.type == "histogram" {
                let histogram = histograms[name.rawValue] ?? Histogram()
                for (index, bound) in Metrics.buckets.enumerated() {
                    out += "\(name.rawValue)_bucket{le=\"\(bound)\"} \(histogram.counts[index])\n"
                }
                out += "\(name.rawValue)_bucket{le=\"+Inf\"} \(histogram.count)\n"
                out += "\(name.rawValue)_sum \(histogram.sum)\n\(name.rawValue)_count \(histogram.count)\n"
            } else {
                let series = scalars.filter { $0.key == name.rawValue || $0.key.hasPrefix(name.rawValue + "{") }
                if series.isEmpty { out += "\(name.rawValue) 0\n" }
                for (key, value) in series.sorted(by: { $0.key < $1.key }) { out += "\(key) \(value)\n" }
            }
        }
        return out
    }
}
