import ArgumentParser
import Dispatch
import Foundation
import Logging
import NftIR
import NftNetlink
import NftText
import ProxyController
import ServiceModel

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run as the node's service proxy: keep the kernel equal to the cluster's state (root).",
        discussion: """
            Sources: --state DIR (YAML/JSON files as for render; the folder is watched and a file is \
            read once it is completely written), --kubeconfig FILE, or in-cluster (service-account \
            token, when neither is given and KUBERNETES_SERVICE_HOST is set). Nothing is written \
            before the first complete read. Each sync sends one atomic batch with only what changed; \
            changes by others to nftproxy's tables are detected and repaired; a service the kernel \
            refuses is left out and retried once per syncPeriod. SIGTERM stops the agent and leaves \
            the rules in place (`nftproxy cleanup` removes them); SIGUSR1 writes the last applied \
            ruleset and the last refused batch to stderr.
            """
    )

    @OptionGroup var node: NodeOptions

    @Option(help: ArgumentHelp("A folder of state files to program and watch.", valueName: "dir"))
    var state: String?

    @Option(help: ArgumentHelp("A kubeconfig for the API server (list and watch Services, EndpointSlices and this Node).", valueName: "file"))
    var kubeconfig: String?

    @Option(name: .customLong("healthz-bind-address"), help: ArgumentHelp("host:port for /healthz and /livez (default: the config's, 0.0.0.0:10256).", valueName: "address"))
    var healthzBindAddress: String?

    @Option(name: .customLong("metrics-bind-address"), help: ArgumentHelp("host:port for /metrics and /debug (default: the config's, 127.0.0.1:10249; empty disables).", valueName: "address"))
    var metricsBindAddress: String?

    @Option(name: .customLong("sync-period"), help: ArgumentHelp("Full resync and retry interval, a Go duration (default 30s).", valueName: "duration"))
    var syncPeriod: String?

    @Option(name: .customLong("min-sync-period"), help: ArgumentHelp("Minimum time between syncs, a Go duration (default 1s; 0 syncs at once).", valueName: "duration"))
    var minSyncPeriod: String?

    @Option(name: [.customShort("v"), .customLong("v")], help: ArgumentHelp("Log verbosity: 0 (changes only) to 4 (every sync).", valueName: "level"))
    var verbosity: Int = 0

    func validate() throws {
        if state != nil && kubeconfig != nil { throw ValidationError("give --state or --kubeconfig, not both") }
        if state == nil && kubeconfig == nil && ProcessInfo.processInfo.environment["KUBERNETES_SERVICE_HOST"] == nil {
            throw ValidationError("give --state DIR or --kubeconfig FILE (or run in a pod, where the in-cluster config is used)")
        }
    }

    func run() async throws { try await runAgent() }

    /// The agent itself; named apart from `run()` so the entry point cannot pick
    /// ArgumentParser's synchronous default (which only prints help).
    func runAgent() async throws {
        var config = try node.nodeConfig()
        if let syncPeriod { config.syncPeriod = try NodeConfig.parsePeriod(syncPeriod, field: "--sync-period", allowZero: false) }
        if let minSyncPeriod { config.minSyncPeriod = try NodeConfig.parsePeriod(minSyncPeriod, field: "--min-sync-period", allowZero: true) }
        if let healthzBindAddress { config.healthzBindAddress = healthzBindAddress }
        if let metricsBindAddress { config.metricsBindAddress = metricsBindAddress }
        let level: Logger.Level = verbosity >= 4 ? .trace : verbosity >= 2 ? .debug : .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "nftproxy")

        // Fail early, in one line, without root.
        let kernel = FaultInjection.wrap(NetlinkBackend())
        _ = try withKernel("run") { () throws(BackendError) in try kernel.generation() }

        let controller = SyncController(backend: kernel, conntrack: NetlinkConntrack(), config: config, timing: SyncTiming(config),
                                        logger: Logger(label: "nftproxy.sync"))
        let signals = SignalHandlers(controller: controller, logger: logger)
        let http = try await AgentHTTPSetup.start(config: config, controller: controller, logger: logger)
        logger.info("nftproxy started", metadata: ["node": "\(config.nodeName)", "source": "\(state ?? kubeconfig ?? "in-cluster")"])

        let sourceTask: Task<Void, Never>
        if let state {
            let source = try StateDirectorySource(path: state, logger: logger)
            sourceTask = Task { await source.run(into: controller) }
        } else {
            sourceTask = try KubeSourceSetup.start(kubeconfig: kubeconfig, nodeName: config.nodeName, controller: controller, logger: logger)
        }
        await controller.run()
        sourceTask.cancel()
        await http.shutdown()
        _ = signals
        logger.info("nftproxy stopped; rules left in place (`nftproxy cleanup` removes them)")
    }
}

/// SIGTERM and SIGINT stop the agent gracefully; SIGUSR1 dumps what the kernel was last given.
final class SignalHandlers {
    private let sources: [any DispatchSourceSignal]

    init(controller: SyncController, logger: Logger) {
        var sources: [any DispatchSourceSignal] = []
        for signal in [SIGTERM, SIGINT] {
            Foundation.signal(signal, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signal, queue: .global())
            source.setEventHandler {
                Task { await controller.stop() }
            }
            source.resume()
            sources.append(source)
        }
        Foundation.signal(SIGUSR1, SIG_IGN)
        let dump = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: .global())
        dump.setEventHandler {
            let snapshot = controller.status.current
            var text = "# nftproxy: last applied ruleset\n"
            text += snapshot.lastApplied.map { NftText.script($0) }
                ?? (snapshot.changing ? "# (being changed right now: send SIGUSR1 again)\n" : "# (nothing applied yet)\n")
            if let failure = snapshot.lastFailure {
                text += "# nftproxy: last refused batch\n# error: \(failure.error)\n" + NftText.commands(failure.transaction)
            } else {
                text += "# nftproxy: no batch has been refused\n"
            }
            FileHandle.standardError.write(Data(text.utf8))
        }
        dump.resume()
        sources.append(dump)
        self.sources = sources
    }
}

/// Test hook for the namespace suite: when NFTPROXY_FAULTS names a file, each batch first
/// reads it; `fail-all` refuses every batch (as ENOBUFS would), `refuse-service NS/NAME`
/// refuses that service's operations. An absent or empty file injects nothing.
enum FaultInjection {
    static func wrap(_ backend: NetlinkBackend) -> any RulesetBackend {
        guard let path = ProcessInfo.processInfo.environment["NFTPROXY_FAULTS"], !path.isEmpty else { return backend }
        return FaultInjectingBackend(inner: backend, path: path)
    }
}

struct FaultInjectingBackend: RulesetBackend {
    let inner: NetlinkBackend
    let path: String

    func apply(_ transaction: Transaction) throws(BackendError) {
        let words = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(whereSeparator: \.isWhitespace).map(String.init)
        if words.first == "fail-all" {
            // As a real ENOBUFS: the batch as a whole failed, no object is blamed.
            throw BackendError(errno: ENOBUFS, message: "injected failure (NFTPROXY_FAULTS)")
        }
        if words.first == "refuse-service", words.count > 1 {
            let prefix = words[1]
            for (index, operation) in transaction.operations.enumerated() {
                if let single = operation.isolated(to: prefix) {
                    _ = index
                    throw BackendError(errno: EINVAL, operation: single, message: "injected refusal of \(prefix) (NFTPROXY_FAULTS)")
                }
            }
        }
        try inner.apply(transaction)
    }

    func read(_ tables: [TableRef]) throws(BackendError) -> Ruleset { try inner.read(tables) }
    func listTables() throws(BackendError) -> [TableRef] { try inner.listTables() }
    func generation() throws(BackendError) -> UInt32 { try inner.generation() }
}

extension NftIR.Operation {
    /// This operation narrowed to what belongs to service `ns/name`, or nil when none of it does.
    func isolated(to service: String) -> NftIR.Operation? {
        switch self {
        case .addChain(_, let name, _), .addRule(_, let name, _):
            return Naming.service(ofChain: name) == service ? self : nil
        case .addElements(let table, let set, let elements):
            guard let element = elements.first(where: { $0.comment.map(Naming.service(ofComment:)) == service }) else { return nil }
            return .addElements(table, set: set, [element])
        default:
            return nil
        }
    }
}
