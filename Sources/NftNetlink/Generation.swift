import NftIR

extension NetlinkBackend {
    /// NFT_MSG_GETGEN: one small request, answered without dumping anything.
    public func generation() throws(BackendError) -> UInt32 {
        try sockets.withSocket { socket throws(BackendError) in try socket.generation() }
    }
}
