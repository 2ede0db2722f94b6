import NftIR
import Synchronization

/// Keeps one netfilter socket open between calls. Closing a socket that sent a batch waits for
/// the kernel (about 10 ms on this kernel, measured with strace), which an agent syncing one
/// changed service at a time would pay on every sync, on top of the commit itself.
final class SocketPool: Sendable {
    private let netnsPath: String?
    private let idle = Mutex<NetlinkSocket?>(nil)

    init(netnsPath: String?) {
        self.netnsPath = netnsPath
    }

    /// Runs `body` with the idle socket, or a new one. A socket whose call failed is closed
    /// rather than kept: it may still hold the rest of a dump or of the acks.
    func withSocket<T>(_ body: (NetlinkSocket) throws(BackendError) -> T) throws(BackendError) -> T {
        let socket: NetlinkSocket
        if let kept = idle.withLock({ $0.take() }) {
            socket = kept
        } else {
            socket = try NetlinkSocket(netnsPath: netnsPath)
        }
        let value = try body(socket)
        idle.withLock { slot in
            if slot == nil { slot = socket }
        }
        return value
    }
}
