import Foundation

/// kube-proxy's nftables layout for a `ScaleSpec` cluster, as nft text (the peer of P1), written
/// from `../shared/reference/kube-proxy-nftables.md` §1: table `ip kube-proxy`, its base and
/// static chains, the five dispatch maps, and per service port a `service-` chain ending in an
/// anonymous `numgen random mod N vmap { … }`, an `external-` chain for NodePort/LoadBalancer,
/// one `endpoint-` chain per endpoint (hairpin mark, affinity update, dnat) and, with ClientIP
/// affinity, one `affinity-` set per endpoint. Names carry kube-proxy's SHA-256/base32 hash.
/// Commands come in the order a full sync sends them: static objects, then service by service.
enum KubeProxyLayout {
    static let table = "ip kube-proxy"
    static let clusterCIDR = "10.0.0.0/8"
    static let serviceCIDR = "172.16.0.0/12"
    static let nodeIP = "192.168.50.2"

    static func write(_ spec: ScaleSpec, to path: String) throws {
        try spec.validate()
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else { throw BenchError("cannot write \(path)") }
        defer { try? handle.close() }
        var buffer = ""
        func emit(_ line: String) {
            buffer += line
            buffer += "\n"
            if buffer.utf8.count > 1 << 20 {
                handle.write(Data(buffer.utf8))
                buffer = ""
            }
        }
        staticPart(emit)
        for i in 0..<spec.services { service(spec.entry(i), emit) }
        handle.write(Data(buffer.utf8))
    }

    private static func staticPart(_ emit: (String) -> Void) {
        let t = table
        emit("add table \(t) { comment \"rules for kube-proxy\" ; }")
        emit("add chain \(t) mark-for-masquerade")
        emit("add rule \(t) mark-for-masquerade mark set mark or 0x4000")
        emit("add chain \(t) masquerading")
        emit("add rule \(t) masquerading mark and 0x4000 == 0 return")
        emit("add rule \(t) masquerading mark set mark xor 0x4000")
        emit("add rule \(t) masquerading masquerade fully-random")
        for chain in ["services", "service-endpoints-check", "nodeport-endpoints-check", "firewall-check", "cluster-ips-check"] {
            emit("add chain \(t) \(chain)")
        }
        emit("add chain \(t) reject-chain { comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }")
        emit("add rule \(t) reject-chain reject")
        let dispatch = "ipv4_addr . inet_proto . inet_service : verdict"
        emit("add set \(t) cluster-ips { type ipv4_addr ; comment \"Active ClusterIPs\" ; }")
        emit("add set \(t) nodeport-ips { type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }")
        emit("add map \(t) service-ips { type \(dispatch) ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }")
        emit("add map \(t) service-nodeports { type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }")
        emit("add map \(t) no-endpoint-services { type \(dispatch) ; comment \"vmap to drop or reject packets to services with no endpoints\" ; }")
        emit("add map \(t) no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to service nodeports with no endpoints\" ; }")
        emit("add map \(t) firewall-ips { type \(dispatch) ; comment \"destinations that are subject to LoadBalancerSourceRanges\" ; }")
        emit("add rule \(t) services ip daddr . meta l4proto . th dport vmap @service-ips")
        emit("add rule \(t) services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports")
        emit("add rule \(t) service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services")
        emit("add rule \(t) nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports")
        emit("add rule \(t) firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips")
        emit("add rule \(t) cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"")
        emit("add rule \(t) cluster-ips-check ip daddr { \(serviceCIDR) } drop comment \"Drop traffic to unallocated ClusterIPs\"")
        let bases: [(String, String, String, Int, [String])] = [
            ("filter-prerouting-pre-dnat", "filter", "prerouting", -110, ["ct state new jump firewall-check"]),
            ("filter-output-pre-dnat", "filter", "output", -110, ["ct state new jump firewall-check"]),
            ("nat-prerouting", "nat", "prerouting", -100, ["jump services"]),
            ("nat-output", "nat", "output", -100, ["jump services"]),
            ("filter-input", "filter", "input", 0, ["ct state new jump nodeport-endpoints-check", "ct state new jump service-endpoints-check"]),
            ("filter-forward", "filter", "forward", 0, ["ct state new jump service-endpoints-check", "ct state new jump cluster-ips-check"]),
            ("filter-output", "filter", "output", 0, ["ct state new jump service-endpoints-check", "ct state new jump cluster-ips-check"]),
            ("nat-postrouting", "nat", "postrouting", 100, ["jump masquerading"]),
        ]
        for (name, type, hook, priority, rules) in bases {
            emit("add chain \(t) \(name) { type \(type) hook \(hook) priority \(priority) ; }")
            for rule in rules { emit("add rule \(t) \(name) \(rule)") }
        }
        emit("add element \(t) nodeport-ips { \(nodeIP) }")
    }

    private static func service(_ e: ScaleSpec.Entry, _ emit: (String) -> Void) {
        let t = table
        let base = "\(ScaleSpec.namespace)/\(e.name)/tcp/http"
        let hash = kubeHash(base)
        let serviceChain = "service-\(hash)-\(base)"
        let endpoints = e.endpoints.sorted { "\($0):\(ScaleSpec.targetPort)" < "\($1):\(ScaleSpec.targetPort)" }
        var endpointChains: [String] = []
        var affinitySets: [String] = []
        for ip in endpoints {
            let epBase = "\(base)__\(ip)/\(ScaleSpec.targetPort)"
            let epHash = kubeHash(epBase)
            let chain = "endpoint-\(epHash)-\(epBase)"
            let set = "affinity-\(epHash)-\(epBase)"
            endpointChains.append(chain)
            affinitySets.append(set)
            emit("add chain \(t) \(chain)")
            if e.affinity {
                emit("add set \(t) \(set) { type ipv4_addr ; flags dynamic,timeout ; timeout \(ScaleSpec.affinityTimeout)s ; }")
            }
            emit("add rule \(t) \(chain) ip saddr \(ip) jump mark-for-masquerade")
            if e.affinity { emit("add rule \(t) \(chain) update @\(set) { ip saddr }") }
            emit("add rule \(t) \(chain) meta l4proto tcp dnat to \(ip):\(ScaleSpec.targetPort)")
        }
        emit("add chain \(t) \(serviceChain)")
        emit("add rule \(t) \(serviceChain) ip daddr \(e.clusterIP) ip saddr != \(clusterCIDR) jump mark-for-masquerade")
        if e.affinity {
            for (set, chain) in zip(affinitySets, endpointChains) { emit("add rule \(t) \(serviceChain) ip saddr @\(set) goto \(chain)") }
        }
        let arms = endpointChains.enumerated().map { "\($0.offset) : goto \($0.element)" }.joined(separator: " , ")
        emit("add rule \(t) \(serviceChain) numgen random mod \(endpointChains.count) vmap { \(arms) }")
        emit("add element \(t) cluster-ips { \(e.clusterIP) }")
        emit("add element \(t) service-ips { \(e.clusterIP) . tcp . \(ScaleSpec.port) : goto \(serviceChain) }")
        guard e.kind != .clusterIP else { return }
        let externalChain = "external-\(hash)-\(base)"
        emit("add chain \(t) \(externalChain)")
        emit("add rule \(t) \(externalChain) jump mark-for-masquerade")
        emit("add rule \(t) \(externalChain) goto \(serviceChain)")
        if let lb = e.loadBalancerIP {
            emit("add element \(t) service-ips { \(lb) . tcp . \(ScaleSpec.port) : goto \(externalChain) }")
        }
        if let nodePort = e.nodePort {
            emit("add element \(t) service-nodeports { tcp . \(nodePort) : goto \(externalChain) }")
        }
    }

    /// kube-proxy's name hash: the first 8 characters of base32(SHA-256(name)).
    static func kubeHash(_ name: String) -> String {
        let digest = SHA256.hash(Array(name.utf8))
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        // 8 base32 characters = the first 40 bits of the digest.
        var bits: UInt64 = 0
        for byte in digest.prefix(5) { bits = bits << 8 | UInt64(byte) }
        return String((0..<8).map { alphabet[Int((bits >> UInt64(35 - 5 * $0)) & 31)] })
    }
}

/// Plain SHA-256 (FIPS 180-4), only for kube-proxy's chain names.
enum SHA256 {
    private static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    static func hash(_ message: [UInt8]) -> [UInt8] {
        var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
        var data = message + [0x80]
        while data.count % 64 != 56 { data.append(0) }
        let length = UInt64(message.count) * 8
        for shift in stride(from: 56, through: 0, by: -8) { data.append(UInt8((length >> UInt64(shift)) & 0xff)) }
        func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
        var w = [UInt32](repeating: 0, count: 64)
        for chunk in stride(from: 0, to: data.count, by: 64) {
            for i in 0..<16 {
                w[i] = (0..<4).reduce(0) { $0 << 8 | UInt32(data[chunk + 4 * i + $1]) }
            }
            for i in 16..<64 {
                let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
                let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
                w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
            }
            var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
            for i in 0..<64 {
                let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
                let ch = (e & f) ^ (~e & g)
                let t1 = hh &+ s1 &+ ch &+ k[i] &+ w[i]
                let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
                let maj = (a & b) ^ (a & c) ^ (b & c)
                let t2 = s0 &+ maj
                (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
            }
            for (i, v) in [a, b, c, d, e, f, g, hh].enumerated() { h[i] = h[i] &+ v }
        }
        return h.flatMap { v in (0..<4).map { UInt8((v >> UInt32(24 - 8 * $0)) & 0xff) } }
    }
}
