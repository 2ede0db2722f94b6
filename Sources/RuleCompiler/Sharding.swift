import NftIR
import ServiceModel

/// How services are spread over tables.
///
/// The kernel validates a whole table on every commit that adds a rule with `dnat` or a jump
/// (DESIGN.md, "What the kernel charges"): rewriting one service's chain costs O(its table).
/// Node-wide sets and filter chains stay in the `nftproxy` table; each service's chains and its
/// dispatch elements go to one of `count` shard tables (`nftproxy-00` …), chosen by a stable hash
/// of its namespace and name, so a one-service change re-validates about 1/count of the rules.
/// Each shard carries its own `nat` hooks; a packet DNATed by one shard skips the others'.
public struct Sharding: Sendable, Hashable {
    /// Number of shard tables per family (only the ones that hold a service exist).
    public let count: Int

    /// The most shard tables nftproxy makes.
    public static let maximum = 256
    /// Services per shard that the automatic choice aims at. Fewer, larger shards cost more per
    /// change (validation grows with the table); more, smaller ones cost every new connection a
    /// pass through the nat hook of each shard that the kernel runs before its service's (equal
    /// priorities run newest first). Measured at 10k services, side by side: a change's p50 grows
    /// about 2× with 8 shards and 4× with 4 (16 shards: 1.8 ms in BENCHMARKS.md); with 16 shards
    /// a service behind 14 others cost a new connection 2-16 % more client CPU than with one
    /// service in paired P4 runs (more under load).
    public static let servicesPerShard = 1024

    public init(count: Int) {
        self.count = max(1, min(count, Sharding.maximum))
    }

    /// A power of two near `services / servicesPerShard`, so a cluster keeps its layout until
    /// its size doubles.
    public static func automatic(services: Int) -> Sharding {
        var count = 1
        while count * servicesPerShard < services && count < maximum { count *= 2 }
        return Sharding(count: count)
    }

    public init(_ config: NodeConfig, services: Int) {
        self = config.tableShards.map(Sharding.init(count:)) ?? .automatic(services: services)
    }

    /// The shard of a service: FNV-1a of `namespace/name`, stable across runs and machines.
    public func shard(namespace: String, name: String) -> Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in namespace.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        hash = (hash ^ UInt64(UInt8(ascii: "/"))) &* 0x0000_0100_0000_01b3
        for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return Int(hash % UInt64(count))
    }

    public func table(namespace: String, name: String) -> Name {
        Naming.shardTable(shard(namespace: namespace, name: name))
    }
}
