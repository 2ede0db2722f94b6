import Foundation

/// The benchmark cluster: `services` services of mixed types, each with `endpoints` ready
/// endpoints spread over two nodes. Deterministic, so the state file, the kube-proxy layout and
/// the namespace traffic test all agree on every address.
///
/// Service i (0-based, name `svc-i`, namespace `bench`, one TCP port `http` 80 → 8080):
/// - type: i % 10 == 8 NodePort, i % 10 == 9 LoadBalancer, otherwise ClusterIP (80 %);
/// - ClientIP session affinity when i % 20 == 5 (5 %, ClusterIP services);
/// - ClusterIP 172.16.0.0/12 + (i+1), LoadBalancer ingress 198.18.0.0/15 + (i+1);
/// - NodePort 30000 + (its rank among NodePort/LoadBalancer services): unique up to 35,535 of them;
/// - endpoint e: 10.0.0.0/8 + (i·endpoints + e + 1), port 8080, on node-a when e is even, else node-b;
///   EndpointSlices of at most 100 endpoints each.
struct ScaleSpec {
    var services: Int
    var endpoints: Int

    static let namespace = "bench"
    static let port: UInt16 = 80
    static let targetPort: UInt16 = 8080
    static let affinityTimeout = 10800
    static let sliceCapacity = 100

    enum Kind { case clusterIP, nodePort, loadBalancer }

    struct Entry {
        var index: Int
        var name: String
        var kind: Kind
        var affinity: Bool
        var clusterIP: String
        var loadBalancerIP: String?
        var nodePort: UInt16?
        var endpoints: [String]
    }

    static func dotted(_ base: UInt32, plus offset: Int) -> String {
        let value = base &+ UInt32(offset)
        return "\(value >> 24).\((value >> 16) & 0xff).\((value >> 8) & 0xff).\(value & 0xff)"
    }

    func entry(_ i: Int) -> Entry {
        let kind: Kind = i % 10 == 8 ? .nodePort : i % 10 == 9 ? .loadBalancer : .clusterIP
        // NodePort/LoadBalancer services before i: two in every ten.
        let rank = (i / 10) * 2 + (i % 10 == 9 ? 1 : 0)
        return Entry(
            index: i, name: "svc-\(i)", kind: kind, affinity: i % 20 == 5,
            clusterIP: Self.dotted(0xAC10_0000, plus: i + 1),
            loadBalancerIP: kind == .loadBalancer ? Self.dotted(0xC612_0000, plus: i + 1) : nil,
            nodePort: kind == .clusterIP ? nil : UInt16(30000 + rank),
            endpoints: (0..<endpoints).map { Self.dotted(0x0A00_0000, plus: i * endpoints + $0 + 1) }
        )
    }

    func validate() throws {
        guard services >= 1, endpoints >= 1 else { throw BenchError("services and endpoints must be ≥ 1") }
        guard (services / 10) * 2 + 2 <= 35_535 else { throw BenchError("too many NodePort services for the port range") }
        guard services * endpoints < 1 << 23 else { throw BenchError("too many endpoints for 10.0.0.0/9") }
    }

    /// The state as one `kind: List` JSON document, one object per line.
    func writeState(to path: String) throws {
        try validate()
        guard let out = OutputStream(toFileAtPath: path, append: false) else { throw BenchError("cannot write \(path)") }
        out.open()
        defer { out.close() }
        func write(_ text: String) {
            let bytes = Array(text.utf8)
            var offset = 0
            while offset < bytes.count {
                let written = bytes[offset...].withUnsafeBufferPointer { out.write($0.baseAddress!, maxLength: $0.count) }
                if written <= 0 { break }
                offset += written
            }
        }
        write("{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[\n")
        for i in 0..<services {
            let e = entry(i)
            var spec = "\"type\":\"\(e.kind == .clusterIP ? "ClusterIP" : e.kind == .nodePort ? "NodePort" : "LoadBalancer")\","
            spec += "\"clusterIP\":\"\(e.clusterIP)\",\"clusterIPs\":[\"\(e.clusterIP)\"],\"ipFamilies\":[\"IPv4\"],"
            spec += "\"ports\":[{\"name\":\"http\",\"protocol\":\"TCP\",\"port\":\(Self.port),\"targetPort\":\(Self.targetPort)"
            if let nodePort = e.nodePort { spec += ",\"nodePort\":\(nodePort)" }
            spec += "}],"
            if e.kind != .clusterIP { spec += "\"externalTrafficPolicy\":\"Cluster\"," }
            spec += e.affinity
                ? "\"sessionAffinity\":\"ClientIP\",\"sessionAffinityConfig\":{\"clientIP\":{\"timeoutSeconds\":\(Self.affinityTimeout)}}"
                : "\"sessionAffinity\":\"None\""
            let status = e.loadBalancerIP.map { ",\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"\($0)\"}]}}" } ?? ""
            write((i == 0 ? "" : ",\n")
                  + "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"\(e.name)\",\"namespace\":\"\(Self.namespace)\"},\"spec\":{\(spec)}\(status)}")
            for (slice, start) in stride(from: 0, to: e.endpoints.count, by: Self.sliceCapacity).enumerated() {
                let members = e.endpoints[start..<min(start + Self.sliceCapacity, e.endpoints.count)].enumerated().map { offset, ip in
                    "{\"addresses\":[\"\(ip)\"],\"conditions\":{\"ready\":true},\"nodeName\":\"\((start + offset) % 2 == 0 ? "node-a" : "node-b")\"}"
                }
                write(",\n{\"apiVersion\":\"discovery.k8s.io/v1\",\"kind\":\"EndpointSlice\",\"metadata\":{\"name\":\"\(e.name)-\(slice)\","
                      + "\"namespace\":\"\(Self.namespace)\",\"labels\":{\"kubernetes.io/service-name\":\"\(e.name)\"}},\"addressType\":\"IPv4\","
                      + "\"endpoints\":[\(members.joined(separator: ","))],\"ports\":[{\"name\":\"http\",\"protocol\":\"TCP\",\"port\":\(Self.targetPort)}]}")
            }
        }
        write("\n]}\n")
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
