import Testing
@testable import ServiceModel

@Suite struct KubeProxyConfigurationTests {
    static let header = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"

    @Test func fullConfiguration() throws {
        let text = Self.header + """
            mode: nftables
            hostnameOverride: "  Node-A.Example  "
            bindAddress: 192.168.1.10
            clusterCIDR: "10.244.0.0/16, fd00:244::/56"
            nodePortAddresses: [192.168.1.0/24, "2001:db8::/64"]
            healthzBindAddress: "[::]:10256"
            metricsBindAddress: 0.0.0.0:10249
            detectLocalMode: ClusterCIDR
            clientConnection: {kubeconfig: /var/lib/kube-proxy/kubeconfig.conf, qps: 5}
            conntrack: {maxPerCore: 32768}
            iptables: {masqueradeBit: 3}
            nftables:
              masqueradeAll: true
              masqueradeBit: 5
              syncPeriod: 1m30s
              minSyncPeriod: 500ms
            """
        let (config, notes) = try NodeConfig.decodeKubeProxyConfiguration(text, base: NodeConfig())
        #expect(notes == [])
        #expect(config == NodeConfig(
            nodeName: "node-a.example",
            nodeIPs: [IPAddress("192.168.1.10")!],
            clusterCIDRs: [CIDR("10.244.0.0/16")!, CIDR("fd00:244::/56")!],
            nodePortAddresses: [.cidr(CIDR("192.168.1.0/24")!), .cidr(CIDR("2001:db8::/64")!)],
            masqueradeAll: true, masqueradeBit: 5, syncPeriod: 90, minSyncPeriod: 0.5,
            healthzBindAddress: "[::]:10256", metricsBindAddress: "0.0.0.0:10249"))
        #expect(config.masqueradeMark == 0x20)
    }

    @Test func absentFieldsKeepTheBase() throws {
        let base = NodeConfig(
            nodeName: "node-b", nodeIPs: [IPAddress("10.0.0.2")!], clusterCIDRs: [CIDR("10.244.0.0/16")!],
            serviceCIDRs: [CIDR("10.96.0.0/12")!])
        let (config, notes) = try NodeConfig.decodeKubeProxyConfiguration(Self.header + "bindAddress: 0.0.0.0\nhostnameOverride: \"\"", base: base)
        #expect(config == base)
        #expect(notes.isEmpty)
    }

    @Test func emptyClusterCIDRRemovesTheDetector() throws {
        let base = NodeConfig(clusterCIDRs: [CIDR("10.244.0.0/16")!])
        let (config, _) = try NodeConfig.decodeKubeProxyConfiguration(Self.header + "clusterCIDR: \"\"", base: base)
        #expect(config.clusterCIDRs == [])
    }

    @Test(arguments: [
        ("[primary]", [NodePortAddress.primary]),
        ("[all]", [.cidr(CIDR("0.0.0.0/0")!), .cidr(CIDR("::/0")!)]),
        ("[]", []),
    ])
    func nodePortAddressKeywords(yaml: String, expected: [NodePortAddress]) throws {
        let base = NodeConfig(nodePortAddresses: [.cidr(CIDR("10.0.0.0/8")!)])
        let (config, _) = try NodeConfig.decodeKubeProxyConfiguration(Self.header + "nodePortAddresses: \(yaml)", base: base)
        #expect(config.nodePortAddresses == expected)
    }

    @Test func masqueradeAllEitherSpelling() throws {
        let top = try NodeConfig.decodeKubeProxyConfiguration(Self.header + "masqueradeAll: true", base: NodeConfig())
        #expect(top.config.masqueradeAll)
        let off = try NodeConfig.decodeKubeProxyConfiguration(
            Self.header + "nftables: {masqueradeAll: false}", base: NodeConfig(masqueradeAll: true))
        #expect(off.config.masqueradeAll == false)
    }

    @Test func unknownFieldsAreNotes() throws {
        let text = Self.header + """
            hostnameOverride: node-c
            featureGates: {SomeGate: true}
            linux: {masqueradeAll: true}
            healthzBindAddresses: ["0.0.0.0/0"]
            detectLocalMode: NodeCIDR
            nftables: {syncPeriod: 10s, tableName: my-proxy, rateLimit: 5}
            """
        let (config, notes) = try NodeConfig.decodeKubeProxyConfiguration(text, base: NodeConfig())
        #expect(config.nodeName == "node-c")
        #expect(config.syncPeriod == 10)
        #expect(notes == [
            "unknown field linux ignored",
            "unknown field healthzBindAddresses ignored",
            "detectLocalMode NodeCIDR is not supported, ignored: local traffic is detected by clusterCIDR",
            "unknown field nftables.rateLimit ignored",
            "nftables.tableName \"my-proxy\" ignored: nftproxy names its own tables",
        ])
    }

    /// A kubeadm config file holds several documents; the KubeProxyConfiguration one is used.
    @Test func kubeadmMultiDocumentFile() throws {
        let text = """
            apiVersion: kubeadm.k8s.io/v1beta4
            kind: ClusterConfiguration
            networking: {podSubnet: 10.244.0.0/16}
            ---
            \(Self.header)clusterCIDR: 10.244.0.0/16
            """
        let (config, notes) = try NodeConfig.decodeKubeProxyConfiguration(text, base: NodeConfig())
        #expect(config.clusterCIDRs == [CIDR("10.244.0.0/16")!])
        #expect(notes == ["document 1 (kind ClusterConfiguration) ignored"])
    }

    struct Invalid: Sendable, CustomTestStringConvertible {
        var yaml: String
        var field: String
        var message: String
        var withHeader = true
        var testDescription: String { "\(field): \(yaml)" }
    }

    static let invalid: [Invalid] = [
        Invalid(yaml: "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration", field: "apiVersion",
                message: "must be kubeproxy.config.k8s.io/v1alpha1, got \"kubeproxy.config.k8s.io/v1alpha2\"", withHeader: false),
        Invalid(yaml: "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration", field: "kind",
                message: "must be KubeProxyConfiguration, got \"KubeletConfiguration\"", withHeader: false),
        Invalid(yaml: "kind: KubeProxyConfiguration", field: "apiVersion",
                message: "must be kubeproxy.config.k8s.io/v1alpha1, got \"\"", withHeader: false),
        Invalid(yaml: "mode: [x\n", field: "--config", message: "not valid YAML: line 4, column 1: did not find expected ',' or ']' while parsing a flow sequence"),
        Invalid(yaml: "- a list", field: "--config", message: "expected a KubeProxyConfiguration mapping, got a list", withHeader: false),
        Invalid(yaml: "mode: iptables", field: "mode",
                message: "\"iptables\" is not supported: nftproxy implements the nftables mode only (use nftables or leave it empty)"),
        Invalid(yaml: "bindAddress: 10.10.12.11:2000", field: "bindAddress",
                message: "\"10.10.12.11:2000\" is not an IP address (it is the node's primary IP, without a port)"),
        Invalid(yaml: "clusterCIDR: 192.168.59.0", field: "clusterCIDR",
                message: "\"192.168.59.0\" is not a CIDR (expected address/length, e.g. 10.0.0.0/16)"),
        Invalid(yaml: "clusterCIDR: 10.0.0.0/8,10.1.0.0/16", field: "clusterCIDR",
                message: "\"10.0.0.0/8,10.1.0.0/16\": give one CIDR, or one IPv4 and one IPv6 CIDR separated by a comma"),
        Invalid(yaml: "nodePortAddresses: [localhost]", field: "nodePortAddresses[0]",
                message: "\"localhost\" is not supported in nftables mode: NodePorts are never served on loopback (use CIDRs, \"primary\" or \"all\")"),
        Invalid(yaml: "nodePortAddresses: [127.0.0.1/32, primary]", field: "nodePortAddresses[1]",
                message: "\"primary\" cannot be combined with CIDRs; use it alone"),
        Invalid(yaml: "nodePortAddresses: [10.20.30.40]", field: "nodePortAddresses[0]",
                message: "\"10.20.30.40\" is not a CIDR (expected address/length, e.g. 10.0.0.0/16)"),
        Invalid(yaml: "nodePortAddresses: primary", field: "nodePortAddresses", message: "expected a list, got primary"),
        Invalid(yaml: "masqueradeAll: maybe", field: "masqueradeAll", message: "expected true or false, got maybe"),
        Invalid(yaml: "nftables: 5", field: "nftables", message: "expected a mapping, got 5"),
        Invalid(yaml: "nftables: {masqueradeBit: 32}", field: "nftables.masqueradeBit", message: "32 is out of range 0-31"),
        Invalid(yaml: "nftables: {masqueradeBit: -1}", field: "nftables.masqueradeBit", message: "-1 is out of range 0-31"),
        Invalid(yaml: "nftables: {masqueradeBit: fourteen}", field: "nftables.masqueradeBit", message: "expected an integer, got fourteen"),
        Invalid(yaml: "nftables: {syncPeriod: -5s}", field: "nftables.syncPeriod", message: "\"-5s\" must be zero or more"),
        Invalid(yaml: "nftables: {syncPeriod: 30}", field: "nftables.syncPeriod",
                message: "\"30\" is not a duration; use Go syntax such as 30s, 1m0s, 2h22m or 500ms"),
        Invalid(yaml: "nftables: {minSyncPeriod: -1s}", field: "nftables.minSyncPeriod", message: "\"-1s\" must be zero or more"),
        Invalid(yaml: "nftables: {minSyncPeriod: 1m}", field: "nftables.minSyncPeriod",
                message: "minSyncPeriod (60s) must not be longer than syncPeriod (30s)"),
        Invalid(yaml: "healthzBindAddress: 0.0.0.0", field: "healthzBindAddress",
                message: "\"0.0.0.0\" must be IP:port, e.g. 0.0.0.0:10256 or [::]:10256"),
        Invalid(yaml: "metricsBindAddress: 127.0.0.1:70000", field: "metricsBindAddress",
                message: "port \"70000\" in \"127.0.0.1:70000\" must be a number from 1 to 65535"),
        Invalid(yaml: "metricsBindAddress: localhost:10249", field: "metricsBindAddress",
                message: "\"localhost\" in \"localhost:10249\" is not an IP address"),
        Invalid(yaml: "detectLocalMode: Guess", field: "detectLocalMode",
                message: "unknown detectLocalMode \"Guess\" (expected ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix)"),
    ]

    @Test(arguments: invalid)
    func invalidValueNamesTheField(_ testCase: Invalid) {
        let text = (testCase.withHeader ? Self.header : "") + testCase.yaml
        #expect(throws: ConfigError(field: testCase.field, message: testCase.message)) {
            try NodeConfig.decodeKubeProxyConfiguration(text, base: NodeConfig())
        }
    }

    @Test(arguments: [
        ("30s", 30.0), ("1m0s", 60), ("2h22m", 8520), ("500ms", 0.5), ("1.5s", 1.5), ("0", 0), ("-1s", -1),
        ("+2m", 120), (".5s", 0.5), ("1.s", 1), ("1h1m1s1ms", 3661.001), ("250us", 0.00025), ("3\u{B5}s", 0.000003),
        ("3\u{3BC}s", 0.000003), ("100ns", 0.0000001),
    ])
    func goDurations(text: String, seconds: Double) throws {
        let parsed = try #require(NodeConfig.parseGoDuration(text))
        #expect(abs(parsed - seconds) < 1e-9)
    }

    @Test(arguments: ["", "s", "30", "1x", ".s", "+", "--1s", "1s ", " 1s", "1d", "1e3s", "9999999999h", "0x10s"])
    func invalidGoDurations(text: String) {
        #expect(NodeConfig.parseGoDuration(text) == nil)
    }

    @Test func flagHelpersUseTheGivenFieldName() {
        #expect(throws: ConfigError(field: "--cluster-cidr", message: "\"10.0.0.0/99\" is not a CIDR (expected address/length, e.g. 10.0.0.0/16)")) {
            try NodeConfig.parseClusterCIDRs("10.0.0.0/99", field: "--cluster-cidr")
        }
        #expect(throws: ConfigError(field: "--iptables-sync-period", message: "\"soon\" is not a duration; use Go syntax such as 30s, 1m0s, 2h22m or 500ms")) {
            try NodeConfig.parsePeriod("soon", field: "--iptables-sync-period", allowZero: false)
        }
        #expect((try? NodeConfig.parseClusterCIDRs("10.244.0.0/16,fd00::/64", field: "--cluster-cidr")) == [CIDR("10.244.0.0/16")!, CIDR("fd00::/64")!])
        #expect((try? NodeConfig.validateHostPort("[fd00::1]:9000", field: "--healthz-bind-address")) != nil)
    }

    /// kubeadm's ConfigMap writes `syncPeriod: 0s` for "not set"; kube-proxy then uses 30s.
    @Test func zeroSyncPeriodMeansTheDefault() throws {
        let text = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nnftables: {syncPeriod: 0s, minSyncPeriod: 0s}\n"
        let config = try NodeConfig.decodeKubeProxyConfiguration(text, base: NodeConfig()).config
        #expect(config.syncPeriod == 30)
        #expect(config.minSyncPeriod == 0)
    }
}
