import Foundation
import KubeSource
import Logging
import NftIR
import ProxyController
import ServiceModel
import Testing

// MARK: - Objects

private func service(_ name: String, ip: String, namespace: String = "ns", labels: [String: String] = [:]) -> String {
    let labelText = labels.map { "\"\($0.key)\":\"\($0.value)\"" }.joined(separator: ",")
    return """
    {"apiVersion":"v1","kind":"Service","metadata":{"name":"\(name)","namespace":"\(namespace)","labels":{\(labelText)}},\
    "spec":{"type":"ClusterIP","clusterIP":"\(ip)","clusterIPs":["\(ip)"],"ipFamilies":["IPv4"],\
    "ports":[{"name":"http","port":80,"protocol":"TCP","targetPort":8080}]}}
    """
}

private func slice(_ service: String, _ addresses: [String], namespace: String = "ns", labels: [String: String] = [:]) -> String {
    let labelText = labels.map { ",\"\($0.key)\":\"\($0.value)\"" }.joined()
    let endpoints = addresses.map { "{\"addresses\":[\"\($0)\"],\"conditions\":{\"ready\":true},\"nodeName\":\"node-b\"}" }
    return """
    {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"\(service)-x","namespace":"\(namespace)",\
    "labels":{"kubernetes.io/service-name":"\(service)"\(labelText)}},"addressType":"IPv4","endpoints":[\(endpoints.joined(separator: ","))],\
    "ports":[{"name":"http","port":8080,"protocol":"TCP"}]}
    """
}

private func node(_ name: String, zone: String) -> String {
    """
    {"apiVersion":"v1","kind":"Node","metadata":{"name":"\(name)","labels":{"topology.kubernetes.io/zone":"\(zone)"}},\
    "status":{"addresses":[{"type":"InternalIP","address":"192.168.50.\(name == "node-a" ? 2 : 3)"}]}}
    """
}

/// Services a and b with one endpoint each, a Service claimed by another proxy, and two Nodes.
private let cluster = [
    service("a", ip: "10.96.0.10"), slice("a", ["10.244.1.1"]),
    service("b", ip: "10.96.0.11"), slice("b", ["10.244.1.2"]),
    service("other", ip: "10.96.0.12", labels: ["service.kubernetes.io/service-proxy-name": "someone-else"]),
    // The EndpointSlice controller copies the Service's labels onto its slices.
    slice("other", ["10.244.1.3"], labels: ["service.kubernetes.io/service-proxy-name": "someone-else"]),
    node("node-a", zone: "z1"), node("node-b", zone: "z2"),
].joined(separator: "\n")

// MARK: - Harness

private let nodeConfig = NodeConfig(nodeName: "node-a", nodeIPs: [IPAddress("192.168.50.2")!], clusterCIDRs: [CIDR("10.244.0.0/16")!])
private let fast = SyncTiming(minSyncPeriod: .milliseconds(10), syncPeriod: .seconds(30), driftCheckInterval: .milliseconds(50))

private func options(_ change: (inout KubeSource.Options) -> Void = { _ in }) -> KubeSource.Options {
    var options = KubeSource.Options(nodeName: "node-a")
    options.pageSize = 1  // every list is paged
    options.watchTimeout = .seconds(2)
    options.bookmarkInterval = .milliseconds(200)
    options.stallIntervals = 4
    options.initialBackoff = .milliseconds(50)
    options.maximumBackoff = .milliseconds(500)
    options.connectTimeout = .seconds(2)
    change(&options)
    return options
}

/// A source and a controller over an in-memory kernel, both running until `body` returns.
/// `KUBESOURCE_TEST_LOGS=1` prints the source's log after each test.
private struct Agent {
    let source: KubeSource
    let controller: SyncController
    let backend: InMemoryBackend
    let logs: LogRecorder

    /// `service-ns/NAME/tcp/http` chains in the ip table, sorted.
    var serviceChains: [String] {
        backend.ruleset.tables.filter { $0.family == .ip }.flatMap(\.chains).map(\.name.rawValue).filter { $0.hasPrefix("service-ns/") }.sorted()
    }

    /// The rules of one service's chain, as text, to look for endpoint addresses.
    func rules(of service: String) -> String {
        let chain = backend.ruleset.chain(.ip, Name("service-ns/\(service)/tcp/http")!)
        return chain.map { String(describing: $0.rules) } ?? ""
    }

    func objects() async -> ClusterState { await controller.objects }
}

private func withAgent<T>(_ server: FakeAPIServer, config: KubeConfig? = nil, options: KubeSource.Options = options(),
                          _ body: (Agent) async throws -> T) async throws -> T {
    let logs = LogRecorder()
    var kubeconfig = config
    if kubeconfig == nil { kubeconfig = try KubeConfig.load(path: await server.kubeconfig(auth: "cert", style: "data")) }
    let source = try KubeSource(config: kubeconfig!, options: options, logger: logs.logger)
    let backend = InMemoryBackend()
    let controller = SyncController(backend: backend, config: nodeConfig, timing: fast,
                                    logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
    let loop = Task { await controller.run() }
    let feed = Task { await source.run(into: controller) }
    defer {
        feed.cancel()
        loop.cancel()
    }
    let result = try await body(Agent(source: source, controller: controller, backend: backend, logs: logs))
    if ProcessInfo.processInfo.environment["KUBESOURCE_TEST_LOGS"] != nil {
        for record in logs.records { print("LOG \(record.level) \(record.message) \(record.metadata)") }
    }
    feed.cancel()
    await feed.value  // run(into:) returns once cancelled
    await controller.stop()
    return result
}

// MARK: - Tests

@Suite struct KubeSourceTests {
    @Test func initialPagedListFillsTheStoreAndRulesFollow() async throws {
        try await withFakeAPIServer(objects: cluster) { server in
            try await withAgent(server) { agent in
                #expect(await eventually { agent.source.isSynced })
                #expect(await eventually { agent.serviceChains == ["service-ns/a/tcp/http", "service-ns/b/tcp/http"] },
                        "chains: \(agent.serviceChains)")
                let objects = await agent.objects()
                #expect(objects.services.map(\.name) == ["a", "b"])
                #expect(objects.endpointSlices.map(\.name) == ["a-x", "b-x"])
                // Only this node, by field selector.
                #expect(objects.nodes.map(\.name) == ["node-a"])
                #expect(agent.source.counters.lists == 3)
                // Two proxied services with a page size of 1: the list took more than one request.
                let listRequests = try await server.count("services", "list")
                #expect(listRequests >= 2)
                #expect(agent.rules(of: "a").contains("10.244.1.1"), "rules: \(agent.rules(of: "a"))")
            }
        }
    }

    @Test func labelledServicesAreNotProxied() async throws {
        try await withFakeAPIServer(objects: cluster) { server in
            try await withAgent(server) { agent in
                #expect(await eventually { agent.serviceChains.count == 2 })
                #expect(await !agent.objects().services.contains { $0.name == "other" })
                #expect(await !agent.objects().endpointSlices.contains { $0.name == "other-x" })
                // Labelling a proxied service for another proxy takes it away (the server sends DELETED).
                try await server.apply(service("a", ip: "10.96.0.10", labels: ["service.kubernetes.io/service-proxy-name": "x"]))
                #expect(await eventually { agent.serviceChains == ["service-ns/b/tcp/http"] }, "chains: \(agent.serviceChains)")
                // A headless service's slice (labelled so by the endpointslice controller) is filtered too.
                try await server.apply(service("h", ip: "10.96.0.20"))
                try await server.apply(slice("h", ["10.244.9.9"], labels: ["service.kubernetes.io/headless": ""]))
                // A later change to another slice arrives: the headless one would have come before it.
                try await server.apply(slice("b", ["10.244.1.9"]))
                #expect(await eventually { agent.rules(of: "b").contains("10.244.1.9") })
                #expect(await agent.objects().services.contains { $0.name == "h" })
                #expect(await !agent.objects().endpointSlices.contains { $0.name == "h-x" })
            }
        }
    }

    @Test func watchEventsAddModifyAndDelete() async throws {
        try await withFakeAPIServer(objects: cluster) { server in
            try await withAgent(server) { agent in
                #expect(await eventually { agent.serviceChains.count == 2 })
                let lists = agent.source.counters.lists
                try await server.apply(service("c", ip: "10.96.0.13") + "\n" + slice("c", ["10.244.2.1"]))
                #expect(await eventually { agent.serviceChains.contains("service-ns/c/tcp/http") && agent.rules(of: "c").contains("10.244.2.1") })
                try await server.apply(slice("c", ["10.244.2.7"]))
                #expect(await eventually { agent.rules(of: "c").contains("10.244.2.7") && !agent.rules(of: "c").contains("10.244.2.1") },
                        "rules: \(agent.rules(of: "c"))")
                try await server.delete("endpointslices", namespace: "ns", name: "c-x")
                #expect(await eventually { await !agent.objects().endpointSlices.contains { $0.name == "c-x" } })
                try await server.delete("services", namespace: "ns", name: "c")
                #expect(await eventually { agent.serviceChains == ["service-ns/a/tcp/http", "service-ns/b/tcp/http"] })
                // All of that came by watch, not by listing again.
                #expect(agent.source.counters.lists == lists)
                #expect(agent.source.counters.events >= 4)
            }
        }
    }

    @Test func invalidUpdateReplacesTheGoodCopy() async throws {
        try await withFakeAPIServer(objects: cluster) { server in
            try await withAgent(server) { agent in
                #expect(await eventually { agent.serviceChains.count == 2 })
                try await server.apply(service("b", ip: "10.96.0.999"))
                #expect(await eventually { agent.serviceChains == ["service-ns/a/tcp/http"] }, "chains: \(agent.serviceChains)")
                let problems = await agent.objects().problems
                #expect(problems.contains { $0.object == ObjectRef(kind: "Service", namespace: "ns", name: "b") && $0.skipped })
            }
        }
    }

    @Test func expiredHistoryReListsAndDeletesWhatVanished() async throws {
        try await withFakeAPIServer(objects: cluster) { server in
            try await withAgent(server) { agent in
                #expect(await eventually { agent.serviceChains.count == 2 })
                let before = try await server.count("services", "list")
                // Disconnect, delete b meanwhile, and forget the history the watch would resume from.
                try await server.control("POST", "/outage?seconds=1")
                try await server.delete("services", namespace: "ns", name: "b")
                try await server.delete("endpointslices", namespace: "ns", name: "b-x")
                try await server.control("POST", "/compact")
                #expect(await eventually { agent.serviceChains == ["service-ns/a/tcp/http"] }, "chains: \(agent.serviceChains)")
                #expect(await eventually { await agent.objects().endpointSlices.map(\.name) == ["a-x"] })
                // Services and slices (and the Node) were listed again, not resumed.
                #expect(await eventually { agent.source.counters.relists == 3 }, "counters: \(agent.source.counters)")
                #expect(try await server.count("services", "list") > before)
            }
        }
    }

    @Test func droppedWatchesResumeFromTheLastVersion() async throws {
        try await withFakeAPIServer(objects: cluster) { server in
            try await withAgent(server) { agent in
                #expect(await eventually { agent.serviceChains.count == 2 })
                let counters = agent.source.counters
                try await server.control("POST", "/drop-watches")
                #expect(await eventually { agent.source.counters.reconnects >= counters.reconnects + 3 }, "counters: \(agent.source.counters)")
                try await server.apply(service("d", ip: "10.96.0.14") + "\n" + slice("d", ["10.244.3.1"]))
                #expect(await eventually { agent.serviceChains.contains("service-ns/d/tcp/http") })
                // Resumed, not re-listed.
                #expect(agent.source.counters.lists == counters.lists)
                #expect(agent.source.counters.relists == 0)
            }
        }
    }

    @Test func stalledWatchIsReplaced() async throws {
        try await withFakeAPIServer(objects: cluster) { server in
            try await withAgent(server) { agent in
                #expect(await eventually { agent.serviceChains.count == 2 })
                let watches = agent.source.counters.watches
                try await server.control("POST", "/stall?seconds=2")
                // 4 bookmark intervals of 200 ms without a byte: every watch is dropped and sent again.
                #expect(await eventually(4) { agent.source.counters.stalls >= 3 }, "counters: \(agent.source.counters)")
                #expect(await eventually { agent.source.counters.watches >= watches + 3 })
                #expect(agent.logs.count(.warning, "watch stalled") >= 3)
                try await server.apply(service("e", ip: "10.96.0.15") + "\n" + slice("e", ["10.244.4.1"]))
                #expect(await eventually { agent.serviceChains.contains("service-ns/e/tcp/http") })
            }
        }
    }

    @Test func serverErrorsAreRetriedWithBackoff() async throws {
        try await withFakeAPIServer(objects: cluster) { server in
            try await server.control("POST", "/fail?code=503&count=6")
            try await withAgent(server) { agent in
                #expect(await eventually { agent.serviceChains.count == 2 })
                #expect(agent.source.counters.failures == 6)
                #expect(agent.logs.count(.warning, "API server answered with an error") == 1)
                #expect(agent.logs.count(.info, "API server reachable again") == 1)
            }
        }
    }

    /// The server goes away for 30 s (with the production backoff cap of 10 s): the store and the
    /// rules stay as they were, one warning is logged, and a change made meanwhile arrives after.
    @Test func outageKeepsRulesAndRecovers() async throws {
        try await withFakeAPIServer(objects: cluster) { server in
            let production = options { $0.initialBackoff = .milliseconds(200); $0.maximumBackoff = .seconds(10) }
            try await withAgent(server, options: production) { agent in
                #expect(await eventually { agent.serviceChains.count == 2 })
                try await Task.sleep(for: .milliseconds(200))
                let applied = agent.backend.applied.count
                let ruleset = agent.backend.ruleset
                let objects = await agent.objects()
                try await server.control("POST", "/outage?seconds=30")
                try await server.delete("services", namespace: "ns", name: "b")
                let outageEnds = ContinuousClock.now + .seconds(30)
                while ContinuousClock.now < outageEnds - .seconds(1) {
                    try await Task.sleep(for: .seconds(1))
                    #expect(agent.backend.applied.count == applied)
                    #expect(agent.backend.ruleset == ruleset)
                    #expect(await agent.objects() == objects)
                }
                #expect(agent.logs.count(.warning, "cannot reach the API server") == 1)
                #expect(agent.source.counters.failures >= 6, "counters: \(agent.source.counters)")
                #expect(agent.source.currentError != nil)
                // Back within the 10 s backoff cap, resuming (not re-listing) from where it was.
                #expect(await eventually(20) { agent.serviceChains == ["service-ns/a/tcp/http"] }, "chains: \(agent.serviceChains)")
                #expect(await eventually { agent.logs.count(.info, "API server reachable again") == 1 })
                #expect(agent.source.currentError == nil)
                #expect(agent.source.counters.relists == 0)
            }
        }
    }

    @Test(arguments: ["data", "files"])
    func clientCertificateAuthentication(style: String) async throws {
        try await withFakeAPIServer(objects: cluster) { server in
            let config = try KubeConfig.load(path: try await server.kubeconfig(auth: "cert", style: style))
            #expect(config.clientCertificate != nil && config.clientKey != nil && config.token == nil)
            try await withAgent(server, config: config) { agent in
                #expect(await eventually { agent.serviceChains.count == 2 })
                let recent = try await server.stats()["recent"] as? [[String: Any]] ?? []
                #expect(recent.contains { $0["user"] as? String == "system:kube-proxy" })
                #expect(!recent.contains { $0["user"] as? String == "token" })
            }
        }
    }

    @Test func tokenFileAuthenticationFollowsRotation() async throws {
        try await withFakeAPIServer(objects: cluster) { server in
            let config = try KubeConfig.load(path: try await server.kubeconfig(auth: "token", style: "files"))
            #expect(config.clientCertificate == nil)
            guard case .file = config.token else { Issue.record("expected a token file, got \(String(describing: config.token))"); return }
            try await withAgent(server, config: config) { agent in
                #expect(await eventually { agent.serviceChains.count == 2 })
                // Rotate: the old token is no longer accepted, the file holds the new one.
                try await server.control("POST", "/tokens?token=rotated-\(UUID().uuidString)")
                try await server.control("POST", "/drop-watches")
                try await server.apply(service("f", ip: "10.96.0.16") + "\n" + slice("f", ["10.244.5.1"]))
                #expect(await eventually { agent.serviceChains.contains("service-ns/f/tcp/http") })
                #expect(agent.source.counters.unauthorized == 0)
            }
        }
    }

    @Test func inlineTokenAndInClusterConfigAuthenticate() async throws {
        try await withFakeAPIServer(objects: cluster) { server in
            let inline = try KubeConfig.load(path: try await server.kubeconfig(auth: "token", style: "data"))
            guard case .inline = inline.token else { Issue.record("expected an inline token"); return }
            try await withAgent(server, config: inline) { agent in
                #expect(await eventually { agent.serviceChains.count == 2 })
            }
            let inCluster = try KubeConfig.inCluster(
                environment: ["KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "\(server.port)"],
                directory: server.certDirectory)
            #expect(inCluster.server == server.server)
            try await withAgent(server, config: inCluster) { agent in
                #expect(await eventually { agent.serviceChains.count == 2 })
                #expect(agent.source.counters.unauthorized == 0)
            }
        }
    }

    @Test func unauthorizedIsReported() async throws {
        try await withFakeAPIServer(objects: cluster) { server in
            var config = try KubeConfig.load(path: try await server.kubeconfig(auth: "token", style: "data"))
            config.token = .inline("wrong-token")
            try await withAgent(server, config: config) { agent in
                #expect(await eventually { agent.source.counters.unauthorized >= 3 })
                #expect(agent.logs.count(.error, "API server rejected nftproxy's credentials") == 1)
                let record = agent.logs.records.first { $0.level == .error }
                #expect(record?.metadata["status"] == "401")
                #expect(agent.source.currentError?.contains("401") == true)
                #expect(!agent.source.isSynced)
                #expect(agent.backend.applied.isEmpty)
            }
        }
    }

    @Test func serverCertificateNotSignedByTheConfiguredCAIsRejected() async throws {
        try await withFakeAPIServer(objects: cluster) { server in
            var config = try KubeConfig.load(path: try await server.kubeconfig(auth: "cert", style: "data"))
            // Trust only the client certificate (not the server's CA): the handshake must fail.
            config.certificateAuthority = config.clientCertificate
            try await withAgent(server, config: config) { agent in
                #expect(await eventually { agent.source.counters.failures >= 3 })
                #expect(!agent.source.isSynced)
                #expect(agent.logs.count(.warning, "cannot reach the API server") == 1)
                let listRequests = try await server.count("services", "list")
                #expect(listRequests == 0)
            }
        }
    }
}
