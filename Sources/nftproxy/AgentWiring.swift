import AgentHTTP
import KubeSource
import Logging
import ProxyController
import ServiceModel

/// Starts the health, metrics and health-check-port servers, and keeps the health-check ports
/// in step with each sync.
enum AgentHTTPSetup {
    static func start(config: NodeConfig, controller: SyncController, logger: Logger) async throws -> AgentHTTPServers {
        let servers = AgentHTTPServers(status: controller.status, metrics: controller.metrics,
                                       syncPeriod: .milliseconds(Int64(config.syncPeriod * 1000)))
        do {
            try await servers.start(healthz: try BindAddress.parse(config.healthzBindAddress),
                                    metrics: try BindAddress.parse(config.metricsBindAddress))
        } catch {
            await servers.shutdown()
            throw CommandFailure("\(error)")
        }
        await controller.onSync { _ in
            Task {
                for error in await servers.updateFromStatus() {
                    logger.warning("health-check node port not served", metadata: ["error": "\(error)"])
                }
            }
        }
        return servers
    }
}

/// `run --kubeconfig FILE` or in-cluster: list and watch the API server.
enum KubeSourceSetup {
    static func start(kubeconfig: String?, nodeName: String, controller: SyncController, logger: Logger) throws -> Task<Void, Never> {
        guard !nodeName.isEmpty else {
            throw CommandFailure("run with an API server needs the node's name: --hostname-override or hostnameOverride in --config")
        }
        let source: KubeSource
        do {
            source = try KubeSource(config: try KubeConfig.resolve(kubeconfig: kubeconfig), options: KubeSource.Options(nodeName: nodeName),
                                    logger: Logger(label: "nftproxy.kube"))
        } catch {
            throw CommandFailure("\(error)")
        }
        return Task { await source.run(into: controller) }
    }
}
