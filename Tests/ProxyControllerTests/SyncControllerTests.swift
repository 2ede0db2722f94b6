import Foundation
import NftIR
@testable import ProxyController
import RuleCompiler
import ServiceModel
import Testing

private let config = NodeConfig(nodeName: "node-a", nodeIPs: [IPAddress("192.168.50.2")!], clusterCIDRs: [CIDR("10.244.0.0/16")!])
private let fast = SyncTiming(minSyncPeriod: .milliseconds(20), syncPeriod: .milliseconds(600), driftCheckInterval: .milliseconds(20))

private func objects(_ services: [(String, String, [String])]) -> ClusterState {
    var state = ClusterState()
    for (name, clusterIP, endpoints) in services {
        state.services.append(Service(namespace: "ns", name: name, clusterIPs: [IPAddress(clusterIP)!],
                                      ports: [ServicePort(name: "http", protocol: .tcp, port: 80, targetPort: .number(8080))]))
        state.endpointSlices.append(EndpointSlice(
            namespace: "ns", name: "\(name)-x", serviceName: name, addressType: .ipv4,
            endpoints: endpoints.map { Endpoint(addresses: [IPAddress($0)!]) },
            ports: [EndpointPort(name: "http", protocol: .tcp, port: 8080)]))
    }
    return state
}

/// Polls until `condition` holds, for at most `seconds` and at least 200 polls. This is a
/// deadline, not a timing assertion: the suite runs kernel tests and 10k-service compiles in
/// parallel on two cores, which can keep the controller off the CPU for seconds, so the bound is
/// generous and a poller that was starved too gets its turns before giving up.
private func eventually(_ seconds: Double = 15, _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    var polls = 0
    while ContinuousClock.now < deadline || polls < 200 {
        if await condition() { return true }
        polls += 1
        try? await Task.sleep(for: .milliseconds(5))
    }
    return false
}

private func serviceChains(_ backend: InMemoryBackend) -> [String] {
    backend.ruleset.tables.filter { $0.family == .ip }.flatMap(\.chains).map(\.name.rawValue)
        .filter { $0.hasPrefix("service-") && $0.contains("/") }.sorted()
}

@Suite(.serialized) struct SyncControllerTests {
    @Test func nothingIsWrittenBeforeTheFirstCompleteList() async throws {
        let backend = InMemoryBackend()
        let controller = SyncController(backend: backend, config: config, timing: fast)
        let loop = Task { await controller.run() }
        defer { loop.cancel() }
        await controller.update { $0.replace(ObjectStore.Kind.allCases, with: objects([("a", "10.96.0.1", ["10.244.1.1"])])) }
        try await Task.sleep(for: .milliseconds(150))
        #expect(backend.applied.isEmpty)
        await controller.markReady()
        #expect(await eventually { serviceChains(backend) == ["service-ns/a/tcp/http"] })
        await controller.stop()
    }

    @Test func aChangeSendsOnlyThatServicesOperations() async throws {
        let backend = InMemoryBackend()
        let controller = SyncController(backend: backend, config: config, timing: fast)
        let loop = Task { await controller.run() }
        defer { loop.cancel() }
        await controller.update { $0.replace(ObjectStore.Kind.allCases, with: objects([("a", "10.96.0.1", ["10.244.1.1"]), ("b", "10.96.0.2", ["10.244.1.2"])])) }
        await controller.markReady()
        #expect(await eventually { serviceChains(backend).count == 2 })
        let before = backend.applied.count
        await controller.update { $0.upsert(objects([("b", "10.96.0.2", ["10.244.1.2", "10.244.1.3"])])) }
        #expect(await eventually { backend.applied.count == before + 1 })
        let last = try #require(backend.applied.last)
        let touched = Set(last.operations.compactMap(\.service))
        #expect(touched == ["ns/b"], "the sync touched \(touched)")
        #expect(!last.operations.contains { if case .addTable = $0 { true } else { false } })
        await controller.stop()
    }

    @Test func deletedTableIsRepaired() async throws {
        let backend = InMemoryBackend()
        let metrics = Metrics()
        let controller = SyncController(backend: backend, config: config, timing: fast, metrics: metrics)
        let loop = Task { await controller.run() }
        defer { loop.cancel() }
        await controller.update { $0.replace(ObjectStore.Kind.allCases, with: objects([("a", "10.96.0.1", ["10.244.1.1"])])) }
        await controller.markReady()
        #expect(await eventually { !serviceChains(backend).isEmpty })
        backend.tamper { $0.tables.removeAll() }
        #expect(await eventually { serviceChains(backend) == ["service-ns/a/tcp/http"] })
        #expect(metrics.value(.driftRepairs) == 1)
        await controller.stop()
    }

    @Test func aStrayElementIsRemoved() async throws {
        let backend = InMemoryBackend()
        let controller = SyncController(backend: backend, config: config, timing: fast)
        let loop = Task { await controller.run() }
        defer { loop.cancel() }
        await controller.update { $0.replace(ObjectStore.Kind.allCases, with: objects([("a", "10.96.0.1", ["10.244.1.1"])])) }
        await controller.markReady()
        #expect(await eventually { !serviceChains(backend).isEmpty })
        let stray = Element([.address(IPAddress("10.96.9.9")!), .proto(.tcp), .port(80)], verdict: .drop)
        backend.tamper { ruleset in
            let table = ruleset.tables.firstIndex { $0.set(Naming.serviceIPs) != nil }!
            let index = ruleset.tables[table].sets.firstIndex { $0.name == Naming.serviceIPs }!
            ruleset.tables[table].sets[index].elements.append(stray)
        }
        #expect(await eventually {
            !backend.ruleset.elements(.ip, Naming.serviceIPs).contains(stray)
        })
        await controller.stop()
    }

    @Test func aRefusedServiceIsLeftOutAndTheRestIsProgrammed() async throws {
        let backend = InMemoryBackend()
        backend.refuse { operation in
            operation.service == "ns/bad" ? BackendError(errno: 22, operation: operation, message: "refused by test") : nil
        }
        let metrics = Metrics()
        let controller = SyncController(backend: backend, config: config, timing: fast, metrics: metrics)
        let loop = Task { await controller.run() }
        defer { loop.cancel() }
        await controller.update {
            $0.replace(ObjectStore.Kind.allCases, with: objects([("a", "10.96.0.1", ["10.244.1.1"]), ("bad", "10.96.0.2", ["10.244.1.2"])]))
        }
        await controller.markReady()
        #expect(await eventually { serviceChains(backend) == ["service-ns/a/tcp/http"] })
        #expect(controller.status.current.quarantined == ["ns/bad"])
        // A service added afterwards is programmed at once.
        await controller.update { $0.upsert(objects([("c", "10.96.0.3", ["10.244.1.3"])])) }
        #expect(await eventually { serviceChains(backend) == ["service-ns/a/tcp/http", "service-ns/c/tcp/http"] })
        // Not retried in a tight loop: within one syncPeriod the bad service is tried at most once more.
        let failures = metrics.value(.syncFailures) ?? 0
        try await Task.sleep(for: .milliseconds(400))
        #expect((metrics.value(.syncFailures) ?? 0) - failures <= 1)
        await controller.stop()
    }

    @Test func failingBatchesMakeTheAgentUnhealthyThenItRecovers() async throws {
        let backend = InMemoryBackend()
        let controller = SyncController(backend: backend, config: config, timing: fast)
        let loop = Task { await controller.run() }
        defer { loop.cancel() }
        await controller.update { $0.replace(ObjectStore.Kind.allCases, with: objects([("a", "10.96.0.1", ["10.244.1.1"])])) }
        await controller.markReady()
        #expect(await eventually { !serviceChains(backend).isEmpty })
        #expect(controller.status.isHealthy(timeout: .milliseconds(100)))
        backend.refuse { BackendError(errno: 105, operation: .addTable($0.table, comment: nil), message: "ENOBUFS by test") }
        await controller.update { $0.upsert(objects([("a", "10.96.0.1", ["10.244.1.1", "10.244.1.9"])])) }
        #expect(await eventually { !controller.status.isHealthy(timeout: .milliseconds(100)) })
        backend.refuse(nil)
        #expect(await eventually { controller.status.isHealthy(timeout: .milliseconds(100)) })
        #expect(backend.ruleset.chain(.ip, Name("service-ns/a/tcp/http")!)?.rules.count == 3)
        await controller.stop()
    }

    /// ENOBUFS (or any whole-batch failure) names no guilty object even when an operation is
    /// attached: nothing is quarantined, the change stays pending and health says so.
    @Test func aWholeBatchFailureQuarantinesNothing() async throws {
        let backend = InMemoryBackend()
        let controller = SyncController(backend: backend, config: config, timing: fast)
        let loop = Task { await controller.run() }
        defer { loop.cancel() }
        await controller.update { $0.replace(ObjectStore.Kind.allCases, with: objects([("a", "10.96.0.1", ["10.244.1.1"])])) }
        await controller.markReady()
        #expect(await eventually { !serviceChains(backend).isEmpty })
        backend.refuse { BackendError(errno: 105, operation: $0, message: "ENOBUFS by test") }
        await controller.update { $0.upsert(objects([("b", "10.96.0.2", ["10.244.1.2"])])) }
        #expect(await eventually { !controller.status.isHealthy(timeout: .milliseconds(100)) })
        #expect(controller.status.current.quarantined.isEmpty)
        // The partial sync gave up the status's copy of the rules; dumps say they are changing.
        #expect(controller.status.current.lastApplied == nil)
        #expect(controller.status.current.changing)
        backend.refuse(nil)
        #expect(await eventually { serviceChains(backend) == ["service-ns/a/tcp/http", "service-ns/b/tcp/http"] })
        #expect(await eventually { controller.status.isHealthy(timeout: .milliseconds(100)) })
        #expect(!controller.status.current.changing)
        #expect(controller.status.current.lastApplied?.chain(.ip, Name("service-ns/b/tcp/http")!) != nil)
        await controller.stop()
    }

    /// A failed partial sync leaves the kernel as it was, and so the agent's idea of it: the full
    /// sync that retries still knows the UDP port of a service deleted meanwhile, and flushes it.
    @Test func aFailedPartialSyncKeepsWhatTheKernelHas() async throws {
        let backend = InMemoryBackend()
        let cleaner = RecordingConntrack()
        let controller = SyncController(backend: backend, conntrack: cleaner, config: config, timing: fast)
        let loop = Task { await controller.run() }
        defer { loop.cancel() }
        var state = objects([("a", "10.96.0.1", ["10.244.1.1"]), ("b", "10.96.0.2", ["10.244.1.2"])])
        for index in state.services.indices { state.services[index].ports[0].protocol = .udp }
        for index in state.endpointSlices.indices { state.endpointSlices[index].ports[0].protocol = .udp }
        await controller.update { [state] in $0.replace(ObjectStore.Kind.allCases, with: state) }
        await controller.markReady()
        #expect(await eventually { serviceChains(backend) == ["service-ns/a/udp/http", "service-ns/b/udp/http"] })
        cleaner.reset()
        backend.refuse { BackendError(errno: 105, operation: $0, message: "ENOBUFS by test") }
        await controller.update { $0.remove(ObjectRef(kind: "Service", namespace: "ns", name: "a")) }
        #expect(await eventually { controller.status.current.lastFailure != nil })
        backend.refuse(nil)
        #expect(await eventually { serviceChains(backend) == ["service-ns/b/udp/http"] })
        #expect(await eventually { cleaner.flushed.contains { $0.destinations == [IPAddress("10.96.0.1")!] && $0.keepReplySources.isEmpty } })
        await controller.stop()
    }

    /// When the periodic full resync finds the tampering before the drift check does, the
    /// repair is still counted and logged as one.
    @Test func aRepairByTheFullResyncCountsAsDrift() async throws {
        let backend = InMemoryBackend()
        let metrics = Metrics()
        let slowDriftCheck = SyncTiming(minSyncPeriod: .milliseconds(20), syncPeriod: .milliseconds(300), driftCheckInterval: .seconds(60))
        let controller = SyncController(backend: backend, config: config, timing: slowDriftCheck, metrics: metrics)
        let loop = Task { await controller.run() }
        defer { loop.cancel() }
        await controller.update { $0.replace(ObjectStore.Kind.allCases, with: objects([("a", "10.96.0.1", ["10.244.1.1"])])) }
        await controller.markReady()
        #expect(await eventually { !serviceChains(backend).isEmpty })
        backend.tamper { $0.tables.removeAll() }
        #expect(await eventually { serviceChains(backend) == ["service-ns/a/tcp/http"] })
        #expect(metrics.value(.driftRepairs) == 1)
        await controller.stop()
    }
}

/// Records what the controller asks conntrack to flush.
private final class RecordingConntrack: ConntrackCleaner, @unchecked Sendable {
    private let lock = NSLock()
    private var requests: [ConntrackFlush] = []

    var flushed: [ConntrackFlush] { lock.withLock { requests } }
    func reset() { lock.withLock { requests = [] } }

    func flush(_ requests: [ConntrackFlush]) throws(BackendError) -> Int {
        lock.withLock { self.requests += requests }
        return 0
    }
}
