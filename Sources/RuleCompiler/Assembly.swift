import NftIR
import ServiceModel

/// The ruleset as the sum of its service fragments, kept so that replacing a few fragments
/// yields the few operations that change the kernel to match (the agent's incremental sync),
/// and the whole ruleset can still be listed at any time (render, full sync, drift check).
///
/// Shared sets and maps hold each key once per family, across the node table and all shards
/// (a ClusterIP port in two shards would be DNATed by whichever hook runs first). When several
/// service ports claim one key, the first in service order (namespace, name, then port order)
/// gets it; the others' claims wait, and one of them takes over if the holder goes.
public struct RulesetAssembly: Sendable {
    public let facts: NodeFacts
    public let sharding: Sharding
    public private(set) var fragments: [ObjectRef: ServiceFragment] = [:]
    /// Who claims what, for `replace`: built on first use, so a one-shot compile never pays for it.
    private var index: ClaimIndex?
    /// The node tables' sets without their elements, and where each one is, by family and hairpin
    /// bucket count: every `replace` starts its parts of the node table from them, and with
    /// hairpin buckets they are a few hundred.
    private var emptyNodeTables: [NodeTableKey: (table: Table, positions: [Name: Int])] = [:]

    private struct NodeTableKey: Hashable {
        var family: Family
        var hairpinBuckets: Int
    }

    struct SetSlot: Hashable {
        var table: TableRef
        var set: Name
    }

    /// Where claims on a key compete: the family and the set name, whatever the table.
    fileprivate struct ClaimSpace: Hashable {
        var family: Family
        var set: Name
    }

    /// The element a key holds, and the table it is in.
    fileprivate struct Held: Equatable {
        var table: TableRef
        var element: Element
    }

    private struct ChainKey: Hashable {
        var table: TableRef
        var name: Name
    }

    fileprivate struct ElementKey: Hashable {
        var space: ClaimSpace
        var key: [KeyValue]
    }

    public init(facts: NodeFacts, sharding: Sharding) {
        self.facts = facts
        self.sharding = sharding
    }

    // MARK: - Adding and replacing fragments

    /// Adds a service's fragment, replacing any earlier one (conflicts show in `compilation`).
    /// The claim index, derived from the fragments, is rebuilt when next needed.
    public mutating func insert(_ fragment: ServiceFragment) {
        index = nil
        fragments[fragment.service] = fragment
    }

    /// Whether both assemblies make the same ruleset (same node facts, sharding and fragments),
    /// without listing either.
    public func describesSameRules(as other: RulesetAssembly) -> Bool {
        facts == other.facts && sharding == other.sharding && fragments == other.fragments
    }

    /// Builds the claim index now (the agent does it after a full sync, so that the first
    /// change does not pay for it).
    public mutating func prepare() {
        if index == nil { index = ClaimIndex(fragments.values) }
    }

    /// eTP=Local services with a health-check node port, in service order.
    public var healthChecks: [HealthCheck] {
        if let index { return index.healthChecks.keys.sorted().map { index.healthChecks[$0]! } }
        return fragments.keys.sorted().compactMap { fragments[$0]!.healthCheck }
    }

    /// Services with a Local policy, endpoints elsewhere and none here (internal, external).
    public var noLocalEndpoints: (internal: Int, external: Int) {
        if let index { return index.noLocalEndpoints }
        return (fragments.values.filter(\.noLocalEndpoints.internal).count, fragments.values.filter(\.noLocalEndpoints.external).count)
    }

    /// Replaces the fragments of the services in `changes` (nil: the service is gone) and
    /// returns the operations that take the kernel from the old assembly to the new one, in an
    /// order it accepts. Returns nil, leaving the assembly changed, when a family's node-wide
    /// table appears or goes: then only a full diff knows what to do.
    public mutating func replace(_ changes: [ObjectRef: ServiceFragment?]) -> [Operation]? {
        prepare()
        var index = self.index!
        self.index = nil
        defer { self.index = index }
        let familiesBefore = Family.allCases.filter { hasTables($0, index) }
        let bucketsBefore = Dictionary(uniqueKeysWithValues: Family.allCases.map { ($0, Self.hairpinBuckets(index.keyCount(hairpinSpace($0)))) })
        var holdersBefore: [ElementKey: Held?] = [:]
        var populationBefore: [TableRef: Int] = [:]
        var chainsBefore: [ChainKey: Chain] = [:]
        var chainsAfter: [ChainKey: Chain] = [:]
        var changed: [(old: ServiceFragment?, new: ServiceFragment?)] = []
        for (ref, new) in changes {
            let old = fragments[ref]
            if old == new { continue }
            changed.append((old, new))
            for fragment in [old, new].compactMap({ $0 }) {
                for placed in fragment.elements {
                    let key = ElementKey(space: ClaimSpace(family: placed.table.family, set: placed.set), key: placed.element.key)
                    if holdersBefore[key] == nil { holdersBefore[key] = .some(index.holder(key, in: fragments)) }
                }
                for table in fragment.tables where populationBefore[table] == nil { populationBefore[table] = index.population[table] ?? 0 }
            }
            for placed in old?.chains ?? [] { chainsBefore[ChainKey(table: placed.table, name: placed.chain.name)] = placed.chain }
            for placed in new?.chains ?? [] { chainsAfter[ChainKey(table: placed.table, name: placed.chain.name)] = placed.chain }
        }
        for (old, new) in changed {
            if let old {
                index.remove(old)
                fragments[old.service] = nil
            }
            if let new {
                index.add(new)
                fragments[new.service] = new
            }
        }
        guard Family.allCases.filter({ hasTables($0, index) }) == familiesBefore else { return nil }
        let bucketsAfter = Dictionary(uniqueKeysWithValues: Family.allCases.map { ($0, Self.hairpinBuckets(index.keyCount(hairpinSpace($0)))) })
        // Crossing a bucket-count threshold rebuilds the family's hairpin part (below): every
        // hairpin element moves, and the masquerading chain's first rule changes.
        let rebuilt = Set(Family.allCases.filter { bucketsBefore[$0] != bucketsAfter[$0] })

        // Shard tables come and go with their services; the node tables with their family (above).
        let shards = populationBefore.filter { $0.key.name != Naming.table }
        let created = Set(shards.filter { $0.value == 0 && (index.population[$0.key] ?? 0) > 0 }.keys)
        let deleted = Set(shards.filter { $0.value > 0 && (index.population[$0.key] ?? 0) == 0 }.keys)

        // The touched part of each table, before and after; the table diff orders the operations.
        // A part holds only the sets something is placed in (on both sides, where the layout
        // has them), so a change pays for the sets it touches, not for every set of the table.
        var parts: [TableRef: (before: Table, after: Table)] = [:]
        // Each table's empty sets before and after, and where each set is in each part.
        var layouts: [TableRef: (before: (table: Table, positions: [Name: Int]), after: (table: Table, positions: [Name: Int]))] = [:]
        var included: [TableRef: (before: [Name: Int], after: [Name: Int])] = [:]
        func touch(_ table: TableRef) {
            guard parts[table] == nil else { return }
            let before = emptyTable(table, hairpinBuckets: bucketsBefore[table.family]!)
            let after = bucketsAfter[table.family] == bucketsBefore[table.family] ? before : emptyTable(table, hairpinBuckets: bucketsAfter[table.family]!)
            let empty = Table(family: table.family, name: table.name, comment: before.table.comment)
            parts[table] = (empty, empty)
            layouts[table] = (before, after)
            included[table] = ([:], [:])
        }
        func include(_ set: Name, of table: TableRef) {
            touch(table)
            if included[table]!.before[set] == nil, let position = layouts[table]!.before.positions[set] {
                included[table]!.before[set] = parts[table]!.before.sets.count
                parts[table]!.before.sets.append(layouts[table]!.before.table.sets[position])
            }
            if included[table]!.after[set] == nil, let position = layouts[table]!.after.positions[set] {
                included[table]!.after[set] = parts[table]!.after.sets.count
                parts[table]!.after.sets.append(layouts[table]!.after.table.sets[position])
            }
        }
        func place(_ element: Element, in set: Name, of table: TableRef, after: Bool) {
            let buckets = (after ? bucketsAfter : bucketsBefore)[table.family] ?? 1
            let set = set == Naming.hairpin && buckets > 1 ? Naming.hairpinBucket(Self.hairpinBucket(of: element, buckets), of: buckets).set : set
            include(set, of: table)
            guard let index = after ? included[table]!.after[set] : included[table]!.before[set] else { return }
            if after { parts[table]!.after.sets[index].elements.append(element) } else { parts[table]!.before.sets[index].elements.append(element) }
        }
        for (key, chain) in chainsBefore { touch(key.table); parts[key.table]!.before.chains.append(chain) }
        for (key, chain) in chainsAfter { touch(key.table); parts[key.table]!.after.chains.append(chain) }
        for (key, before) in holdersBefore where !(key.space.set == Naming.hairpin && rebuilt.contains(key.space.family)) {
            let after = index.holder(key, in: fragments)
            guard before != after else { continue }
            if let before { place(before.element, in: key.space.set, of: before.table, after: false) }
            if let after { place(after.element, in: key.space.set, of: after.table, after: true) }
        }
        for family in rebuilt.sorted() {
            // The whole hairpin part, before and after: the masquerading and bucket chains, the
            // hairpin sets and bucket map of both layouts (the map with its elements), and every
            // hairpin element (the untouched ones are held as they were).
            let table = TableRef(family, Naming.table), space = hairpinSpace(family)
            touch(table)
            for (after, buckets) in [(false, bucketsBefore[family]!), (true, bucketsAfter[family]!)] {
                let skeleton = skeleton(table, hairpinBuckets: buckets)
                for set in skeleton.sets where set.name == Naming.hairpinBuckets || set.name.rawValue.hasPrefix(Naming.hairpin.rawValue) {
                    include(set.name, of: table)
                }
                var part = after ? parts[table]!.after : parts[table]!.before
                part.chains += skeleton.chains.filter { $0.name == Naming.masquerading || Naming.isHairpinBucketChain($0.name) }
                if let map = skeleton.set(Naming.hairpinBuckets), let index = (after ? included[table]!.after : included[table]!.before)[map.name] {
                    part.sets[index].elements = map.elements
                }
                if after { parts[table]!.after = part } else { parts[table]!.before = part }
            }
            for (key, holder) in index.holders(space, in: fragments) {
                if let before = holdersBefore[ElementKey(space: space, key: key)] {
                    if let before { place(before.element, in: Naming.hairpin, of: table, after: false) }
                } else {
                    place(holder.element, in: Naming.hairpin, of: table, after: false)
                }
                place(holder.element, in: Naming.hairpin, of: table, after: true)
            }
            for (key, before) in holdersBefore where key.space == space && index.holder(key, in: fragments) == nil {
                if let before { place(before.element, in: Naming.hairpin, of: table, after: false) }
            }
        }
        // The sets in table order, so the operations come in the same order every time.
        for (table, layout) in layouts {
            parts[table]!.before.sets.sort { layout.before.positions[$0.name]! < layout.before.positions[$1.name]! }
            parts[table]!.after.sets.sort { layout.after.positions[$0.name]! < layout.after.positions[$1.name]! }
        }

        var ops: [Operation] = []
        for table in created.sorted() { ops += Transaction.creating(skeleton(table, hairpinBuckets: 1)) }
        for table in parts.keys.sorted() where !deleted.contains(table) {
            let (before, after) = parts[table]!
            ops += Transaction.diff(before.inOrder, after.inOrder)
        }
        ops += deleted.sorted().map { .deleteTable($0) }
        return ops
    }

    /// A table's sets without elements (and where each is), as `replace` starts its parts.
    private mutating func emptyTable(_ ref: TableRef, hairpinBuckets buckets: Int) -> (table: Table, positions: [Name: Int]) {
        let key = NodeTableKey(family: ref.family, hairpinBuckets: buckets)
        if ref.name == Naming.table, let known = emptyNodeTables[key] { return known }
        let skeleton = skeleton(ref, hairpinBuckets: buckets)
        let table = Table(family: ref.family, name: ref.name, comment: skeleton.comment, sets: skeleton.sets.map(\.withoutElements))
        let empty = (table, Dictionary(uniqueKeysWithValues: table.sets.enumerated().map { ($1.name, $0) }))
        if ref.name == Naming.table { emptyNodeTables[key] = empty }
        return empty
    }

    /// Whether a family has tables: the node uses it, or some service has rules in it.
    private func hasTables(_ family: Family, _ index: ClaimIndex) -> Bool {
        (index.familyPopulation[family] ?? 0) > 0 || facts.uses(family.ipFamily)
    }

    private func hairpinSpace(_ family: Family) -> ClaimSpace { ClaimSpace(family: family, set: Naming.hairpin) }

    // MARK: - Hairpin buckets

    /// Up to this many hairpin elements in a family, they are in the one set `hairpin-endpoints`.
    ///
    /// A larger set is split in buckets: reading a set back (read-back, drift check, `diff`)
    /// dumps its elements, and the kernel restarts a set dump's hash walk for every 32 KiB
    /// datagram and skips what it already sent, so one set of 500k elements costs quadratic
    /// time (a third of the read-back at 100k services × 10 endpoints). Each bucket has its own
    /// set and chain; the masquerading chain dispatches on the address's low bits through the
    /// verdict map `hairpin-buckets`. Still a bounded number of sets, each bound from one rule.
    public static let hairpinBucketThreshold = 4096
    /// Elements per bucket, on average, at most.
    public static let hairpinBucketSize = 2048

    /// How many buckets a family's `count` hairpin elements go to: 1 (the single set) up to the
    /// threshold, then the smallest power of two that keeps the average bucket within its size.
    /// Only the assembly knows the count, so only it decides; fragments place their elements
    /// in `hairpin-endpoints`, and the assembly moves them to their buckets.
    public static func hairpinBuckets(_ count: Int) -> Int {
        guard count > hairpinBucketThreshold else { return 1 }
        var buckets = 2
        while buckets * hairpinBucketSize < count { buckets *= 2 }
        return buckets
    }

    /// The bucket of a hairpin element (`A . A`): its address's low bits, which spreads
    /// consecutive pod addresses evenly.
    static func hairpinBucket(of element: Element, _ buckets: Int) -> Int {
        guard case .address(let ip) = element.key.first else { return 0 }
        return Int(ip.low & UInt64(buckets - 1))
    }

    // MARK: - The whole ruleset

    /// Every table: per family the node-wide one, then the shards that hold a service.
    public func ruleset() -> Ruleset { merged().ruleset }

    /// The ruleset with what the agent and the operator need to know about it, and the map keys
    /// that service ports lost to one earlier in order.
    public func compilation(problems: [Problem]) -> Compilation {
        let (ruleset, conflicts, order) = merged()
        var compilation = Compilation(ruleset: ruleset, problems: problems + conflicts, notes: facts.notes, healthChecks: [],
                                      affinity: AffinityTargets(), udpPorts: [])
        for ref in order {
            let fragment = fragments[ref]!
            if let note = fragment.note { compilation.notes.append(note) }
            if let check = fragment.healthCheck { compilation.healthChecks.append(check) }
            compilation.udpPorts += fragment.udpPorts
            if fragment.noLocalEndpoints.internal { compilation.noLocalEndpoints.internal += 1 }
            if fragment.noLocalEndpoints.external { compilation.noLocalEndpoints.external += 1 }
            compilation.affinity.add(fragment)
        }
        compilation.assembly = self
        return compilation
    }

    /// One pass over the fragments in service order: the first claim of a key wins.
    private func merged() -> (ruleset: Ruleset, conflicts: [Problem], order: [ObjectRef]) {
        var chains: [TableRef: [Chain]] = [:]
        var families = Set(Family.allCases.filter { facts.uses($0.ipFamily) })
        var shards = Set<TableRef>()
        // Claim spaces and set slots by number. A fragment's elements go to a handful of them,
        // looked up in `recent` before hashing two names per element.
        var spaces: [ClaimSpace: Int] = [:]
        var slots: [SetSlot: Int] = [:]
        var held: [[Element]] = []
        // Every claimed key, in one table sized once: (space, key) → where its element is held.
        var holders = ClaimTable(capacity: fragments.values.reduce(0) { $0 + $1.elements.count })
        var spaceOfSlot: [Int] = []
        var recent: [(table: TableRef, set: Name, space: Int, slot: Int)] = []
        var lastTable: TableRef?, lastChainTable: TableRef?
        var conflicts: [Problem] = []
        let order = fragments.keys.sorted()
        for ref in order {
            let fragment = fragments[ref]!
            recent.removeAll(keepingCapacity: true)
            for placed in fragment.chains {
                chains[placed.table, default: []].append(placed.chain)
                if placed.table != lastChainTable {
                    lastChainTable = placed.table
                    shards.insert(placed.table)
                }
            }
            // By index: a copy of each placed element (a few reference counts) cost more than its claim.
            for index in fragment.elements.indices {
                let table = fragment.elements[index].table, set = fragment.elements[index].set
                if table != lastTable {
                    lastTable = table
                    families.insert(table.family)
                    if table.name != Naming.table { shards.insert(table) }
                }
                let numbers: (space: Int, slot: Int)
                if let known = recent.first(where: { $0.set == set && $0.table == table }) {
                    numbers = (known.space, known.slot)
                } else {
                    let space = ClaimSpace(family: table.family, set: set)
                    let spaceNumber = spaces[space, default: spaces.count]
                    spaces[space] = spaceNumber
                    let slot = SetSlot(table: table, set: set)
                    let slotNumber = slots[slot, default: held.count]
                    if slotNumber == held.count {
                        slots[slot] = slotNumber
                        held.append([])
                        spaceOfSlot.append(spaceNumber)
                    }
                    numbers = (spaceNumber, slotNumber)
                    recent.append((table, set, spaceNumber, slotNumber))
                }
                let hash = ClaimTable.hash(fragment.elements[index].element.key, space: numbers.space)
                let holder = holders.first(hash) { slot, position in
                    spaceOfSlot[slot] == numbers.space && held[slot][position].key == fragment.elements[index].element.key
                }
                guard let holder else {
                    holders.insert(hash, slot: numbers.slot, position: held[numbers.slot].count)
                    held[numbers.slot].append(fragment.elements[index].element)
                    continue
                }
                let placed = fragment.elements[index], holding = held[holder.slot][holder.position]
                if placed.exclusive && holding.comment != placed.element.comment {
                    let key = placed.element.key.map(\.description).joined(separator: " ")
                    let owner = placed.element.comment?.text ?? ref.description
                    conflicts.append(Problem(object: ref, message: "\(key) is already used by \(holding.comment?.text ?? "another service"); this service port (\(owner)) does not get it", skipped: false))
                }
            }
        }
        var tables: [Table] = []
        for family in Family.allCases where families.contains(family) {
            let hairpinSlot = slots[SetSlot(table: TableRef(family, Naming.table), set: Naming.hairpin)]
            let buckets = Self.hairpinBuckets(hairpinSlot.map { held[$0].count } ?? 0)
            for ref in [TableRef(family, Naming.table)] + shards.filter({ $0.family == family }).sorted() {
                var table = skeleton(ref, hairpinBuckets: buckets)
                if buckets > 1, ref.name == Naming.table, let hairpinSlot,
                   let first = table.sets.firstIndex(where: { $0.name == Naming.hairpinBucket(0, of: buckets).set }) {
                    // The bucket sets follow each other in bucket order; each is sized once.
                    var sizes = [Int](repeating: 0, count: buckets)
                    for element in held[hairpinSlot] { sizes[Self.hairpinBucket(of: element, buckets)] += 1 }
                    for (bucket, size) in sizes.enumerated() { table.sets[first + bucket].elements.reserveCapacity(size) }
                    for element in held[hairpinSlot] { table.sets[first + Self.hairpinBucket(of: element, buckets)].elements.append(element) }
                    held[hairpinSlot] = []
                }
                for index in table.sets.indices where !table.sets[index].isDynamic {
                    // Moved out of the table and `held`, not copied, so the sort moves them in place.
                    var elements: [Element] = []
                    swap(&elements, &table.sets[index].elements)
                    if let slot = slots[SetSlot(table: ref, set: table.sets[index].name)] {
                        if elements.isEmpty { swap(&elements, &held[slot]) } else { elements += held[slot] }
                    }
                    elements.sortByKey()
                    table.sets[index].elements = elements
                }
                table.chains += (chains[ref] ?? []).sorted { $0.name < $1.name }
                tables.append(table)
            }
        }
        // In service order, as the services were compiled.
        return (Ruleset(tables: tables), conflicts, order)
    }

    // MARK: - Fixed parts

    /// A table's fixed sets and chains, before any service adds to them; the node table's
    /// hairpin part as `hairpinBuckets` asks.
    func skeleton(_ ref: TableRef, hairpinBuckets buckets: Int) -> Table {
        ref.name == Naming.table ? nodeTable(ref.family, hairpinBuckets: buckets) : shardTable(ref)
    }

    private func types(_ family: Family) -> (address: DataType, dispatch: [DataType], nodePort: [DataType]) {
        let address = DataType.address(family)
        return (address, [address, .inetProto, .inetService], [.inetProto, .inetService])
    }

    /// The addresses NodePorts answer on, when not every local address does.
    private func nodePortIPs(_ family: Family) -> NamedSet? {
        let ips: [IPAddress]? = facts.nodePortIPs[family.ipFamily] ?? []
        guard let ips else { return nil }
        return NamedSet(Naming.nodePortIPs, key: [types(family).address], comment: Comment("IPs that accept NodePort traffic"),
                        elements: ips.sorted().map { Element([.address($0)]) })
    }

    /// `nftproxy`: the filter hooks (source ranges, services without endpoints, undefined
    /// ClusterIP ports) and masquerade, with the sets every service shares.
    private func nodeTable(_ family: Family, hairpinBuckets buckets: Int) -> Table {
        let (address, dispatchKey, nodePortKey) = types(family)
        let ipFamily = family.ipFamily
        let mark = facts.masqueradeMark
        let nodePortIPs = nodePortIPs(family)
        let loopback = CIDR(ipFamily == .ipv4 ? "127.0.0.0/8" : "::1/128")!

        var sets = [NamedSet(Naming.clusterIPs, key: [address], comment: Comment("Active ClusterIPs"))]
        if let nodePortIPs { sets.append(nodePortIPs) }
        sets += [
            NamedSet(Naming.noEndpointServices, key: dispatchKey, isMap: true, comment: Comment("drop or reject packets to services with no endpoints")),
            NamedSet(Naming.noEndpointNodePorts, key: nodePortKey, isMap: true, comment: Comment("drop or reject packets to NodePorts with no endpoints")),
        ]
        let hairpinComment = Comment("endpoints that reach themselves through a service get masqueraded")
        var hairpinRule = Rule([.ctStatusDNAT, .lookup([.saddr, .daddr], set: Naming.hairpin), .setMarkBit(mark)])
        var hairpinChains: [Chain] = []
        if buckets > 1 {
            var dispatch: [Element] = []
            for index in 0..<buckets {
                let bucket = Naming.hairpinBucket(index, of: buckets)
                let key = family == .ip ? IPAddress(ipv4: UInt32(index)) : IPAddress(ipv6High: 0, low: UInt64(index))
                dispatch.append(Element([.address(key)], verdict: .jump(bucket.chain)))
                hairpinChains.append(Chain(bucket.chain, rules: [Rule([.lookup([.saddr, .daddr], set: bucket.set), .setMarkBit(mark)])]))
            }
            sets.append(NamedSet(Naming.hairpinBuckets, key: [address], isMap: true,
                                 comment: Comment("hairpin endpoints in buckets, by the low bits of their address"), elements: dispatch))
            sets += (0..<buckets).map { NamedSet(Naming.hairpinBucket($0, of: buckets).set, key: [address, address], comment: hairpinComment) }
            hairpinRule = Rule([.ctStatusDNAT, .vmap([.maskedDaddr(lowBits: UInt8(buckets.trailingZeroBitCount))], map: Naming.hairpinBuckets)])
        } else {
            sets.append(NamedSet(Naming.hairpin, key: [address, address], comment: hairpinComment))
        }
        sets += [
            NamedSet(Naming.firewallIPs, key: dispatchKey, comment: Comment("LoadBalancer destinations with loadBalancerSourceRanges")),
            NamedSet(Naming.firewallAllow, key: dispatchKey + [address], flags: [.interval], comment: Comment("allowed sources of LoadBalancer destinations")),
        ]

        let newConnection = Statement.ctStateNew
        let nodePortCheckMatch: [Statement] = nodePortIPs == nil
            ? [.address(.daddr, loopback, negated: true)]
            : [.lookup([.daddr], set: Naming.nodePortIPs)]
        let dispatch: [Selector] = [.daddr, .l4proto, .thDport]
        let portDispatch: [Selector] = [.l4proto, .thDport]

        var clusterIPCheck = [Rule([.lookup([.daddr], set: Naming.clusterIPs), .reject], comment: Comment("reject traffic to undefined ports of ClusterIPs"))]
        for cidr in facts.serviceCIDRs[ipFamily] ?? [] {
            clusterIPCheck.append(Rule([.address(.daddr, cidr, negated: false), .verdict(.drop)], comment: Comment("drop traffic to unallocated ClusterIPs")))
        }

        let chains: [Chain] = [
            Chain(Naming.filterPreroutingPreDNAT, base: BaseChain(type: .filter, hook: .prerouting, priority: Priority(.dstnat, -10)),
                  rules: [Rule([newConnection, .verdict(.jump(Naming.firewallCheck))])]),
            Chain(Naming.filterOutputPreDNAT, base: BaseChain(type: .filter, hook: .output, priority: Priority(.dstnat, -10)),
                  rules: [Rule([newConnection, .verdict(.jump(Naming.firewallCheck))])]),
            Chain(Naming.natPostrouting, base: BaseChain(type: .nat, hook: .postrouting, priority: Priority(.srcnat)),
                  rules: [Rule([.verdict(.jump(Naming.masquerading))])]),
            Chain(Naming.filterInput, base: BaseChain(type: .filter, hook: .input, priority: Priority(.filter)),
                  rules: [Rule([newConnection, .verdict(.jump(Naming.nodePortEndpointsCheck))]),
                          Rule([newConnection, .verdict(.jump(Naming.serviceEndpointsCheck))])]),
            Chain(Naming.filterForward, base: BaseChain(type: .filter, hook: .forward, priority: Priority(.filter)),
                  rules: [Rule([newConnection, .verdict(.jump(Naming.serviceEndpointsCheck))]),
                          Rule([newConnection, .verdict(.jump(Naming.clusterIPsCheck))])]),
            Chain(Naming.filterOutput, base: BaseChain(type: .filter, hook: .output, priority: Priority(.filter)),
                  rules: [Rule([newConnection, .verdict(.jump(Naming.serviceEndpointsCheck))]),
                          Rule([newConnection, .verdict(.jump(Naming.clusterIPsCheck))])]),
            Chain(Naming.firewallCheck, rules: [Rule([
                .lookup(dispatch, set: Naming.firewallIPs),
                .notInSet(dispatch + [.saddr], set: Naming.firewallAllow),
                .verdict(.drop),
            ], comment: Comment("drop sources outside loadBalancerSourceRanges"))]),
            Chain(Naming.serviceEndpointsCheck, rules: [Rule([.vmap(dispatch, map: Naming.noEndpointServices)])]),
            Chain(Naming.nodePortEndpointsCheck, rules: [Rule(nodePortCheckMatch + [.vmap(portDispatch, map: Naming.noEndpointNodePorts)])]),
            Chain(Naming.clusterIPsCheck, rules: clusterIPCheck),
            Chain(Naming.rejectChain, rules: [Rule([.reject])]),
            Chain(Naming.masquerading, rules: [
                hairpinRule,
                Rule([.markBitClear(mark), .verdict(.return)]),
                Rule([.toggleMarkBit(mark)]),
                Rule([.masquerade(fullyRandom: true)]),
            ]),
        ] + hairpinChains
        return Table(family: family, name: Naming.table,
                     comment: Comment("rules for nftproxy: do not edit, nftproxy rewrites this table"), sets: sets, chains: chains)
    }

    /// `nftproxy-NN`: the DNAT hooks for the services of one shard, their dispatch maps, and
    /// session affinity (recorded by the service chains as they DNAT).
    private func shardTable(_ ref: TableRef) -> Table {
        let (address, dispatchKey, nodePortKey) = types(ref.family)
        let nodePortIPs = nodePortIPs(ref.family)
        let loopback = CIDR(ref.family == .ip ? "127.0.0.0/8" : "::1/128")!
        var sets: [NamedSet] = []
        let nodePortMatch: [Statement]
        if let nodePortIPs, nodePortIPs.elements.count == 1, case .address(let ip) = nodePortIPs.elements[0].key[0] {
            // A new connection to a service of a shard whose hook runs later fails this match
            // here: the one NodePort address (by default the node's primary IP) is compared, not
            // looked up in a set (P4 at 256 shards: a third of the cost of passing a shard).
            nodePortMatch = [.address(.daddr, CIDR(address: ip, prefixLength: ip.family.maxPrefixLength)!, negated: false)]
        } else if let nodePortIPs {
            nodePortMatch = [.lookup([.daddr], set: Naming.nodePortIPs)]
            sets.append(nodePortIPs)
        } else {
            nodePortMatch = [.fibLocal(.daddr), .address(.daddr, loopback, negated: true)]
        }
        sets += [
            NamedSet(Naming.serviceIPs, key: dispatchKey, isMap: true, comment: Comment("ClusterIP, ExternalIP and LoadBalancer IP traffic")),
            NamedSet(Naming.serviceNodePorts, key: nodePortKey, isMap: true, comment: Comment("NodePort traffic")),
            NamedSet(Naming.affinity, key: [address, address, .inetProto, .inetService], data: [address, .inetService],
                     flags: [.dynamic, .timeout], size: 1 << 20, comment: Comment("ClientIP session affinity: client . destination . port : backend")),
            NamedSet(Naming.affinityClients, key: [address, address, .inetProto, .inetService],
                     flags: [.dynamic, .timeout], size: 1 << 20, comment: Comment("ClientIP session affinity: client . destination . port within its timeout")),
        ]
        // The dispatch sits in the base chains themselves: every new connection passes through
        // every shard's hooks, and a `jump` to a shared chain measurably cost P4 (BENCHMARKS.md).
        let dispatch = [
            Rule([.vmap([.daddr, .l4proto, .thDport], map: Naming.serviceIPs)]),
            Rule(nodePortMatch + [.vmap([.l4proto, .thDport], map: Naming.serviceNodePorts)]),
        ]
        let chains: [Chain] = [
            Chain(Naming.natPrerouting, base: BaseChain(type: .nat, hook: .prerouting, priority: Priority(.dstnat)), rules: dispatch),
            Chain(Naming.natOutput, base: BaseChain(type: .nat, hook: .output, priority: Priority(.dstnat)), rules: dispatch),
        ]
        return Table(family: ref.family, name: ref.name,
                     comment: Comment("service rules for nftproxy (one shard): do not edit, nftproxy rewrites this table"),
                     sets: sets, chains: chains)
    }
}

/// The keys claimed in one merge, by hash: where each one's element is held (its set slot and
/// position). Open addressing that keeps each key's hash, so a probe compares keys only when the
/// hashes match; a `Dictionary` compares the `[KeyValue]` arrays at every bucket it passes, and
/// that was most of the merge.
private struct ClaimTable {
    private struct Bucket {
        /// 0 for an empty bucket (a real hash of 0 is stored as 1).
        var hash: Int
        var slot: Int32
        var position: Int32
    }

    private var buckets: [Bucket]
    private let mask: Int

    /// Room for `capacity` keys, at most half full.
    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size *= 2 }
        buckets = Array(repeating: Bucket(hash: 0, slot: 0, position: 0), count: size)
        mask = size - 1
    }

    /// The key's hash (seeded per process, as `Hasher` is), never 0.
    static func hash(_ key: [KeyValue], space: Int) -> Int {
        var hasher = Hasher()
        hasher.combine(space)
        key.hashWords(into: &hasher)
        let hash = hasher.finalize()
        return hash == 0 ? 1 : hash
    }

    /// The first entry with this hash for which `matches` holds.
    func first(_ hash: Int, where matches: (_ slot: Int, _ position: Int) -> Bool) -> (slot: Int, position: Int)? {
        var index = hash & mask
        while buckets[index].hash != 0 {
            let bucket = buckets[index]
            if bucket.hash == hash && matches(Int(bucket.slot), Int(bucket.position)) {
                return (Int(bucket.slot), Int(bucket.position))
            }
            index = (index + 1) & mask
        }
        return nil
    }

    /// Adds an entry; the caller has checked that its key is not there.
    mutating func insert(_ hash: Int, slot: Int, position: Int) {
        var index = hash & mask
        while buckets[index].hash != 0 { index = (index + 1) & mask }
        buckets[index] = Bucket(hash: hash, slot: Int32(slot), position: Int32(position))
    }
}

extension AffinityTargets {
    mutating func add(_ fragment: ServiceFragment) {
        for (family, entries) in fragment.affinityDestinations {
            for (key, targets) in entries { destinations[family, default: [:]][key, default: []].formUnion(targets) }
        }
        for (family, entries) in fragment.affinityNodePorts {
            for (key, targets) in entries { nodePorts[family, default: [:]][key, default: []].formUnion(targets) }
        }
    }
}

/// Every claim on every key of the shared sets, with the holder first, and the counts the agent
/// needs between full syncs: maintained fragment by fragment.
///
/// A claim is a service (by number) and the position of the element among its fragment's
/// elements; the element itself stays in the fragment. At 100k services the index holds a
/// million keys, and the agent builds it after every full sync: with each claim holding its
/// service, table and element, in an array per key, in a dictionary per set, that took 2.3 s
/// (the first change after a full sync waited for it) and 200 MiB.
private struct ClaimIndex: Sendable {
    private struct Claim: Sendable {
        var service: Int32
        /// Position among the service's elements: its ports claim in order.
        var order: Int32
    }

    /// The claims on one key, first in service order first. Most keys have one, held inline.
    private enum Holders: Sendable {
        case none
        case one(Claim)
        case several([Claim])

        var first: Claim? {
            switch self {
            case .none: nil
            case .one(let claim): claim
            case .several(let claims): claims.first
            }
        }
    }

    /// A claimed key: its claim space by number, hashed as `ClaimTable` hashes (hashing two
    /// names and the key value by value per element cost more than the rest of the index).
    private struct Key: Hashable {
        var space: Int
        var key: [KeyValue]

        func hash(into hasher: inout Hasher) {
            hasher.combine(space)
            key.hashWords(into: &hasher)
        }
    }

    private var spaces: [RulesetAssembly.ClaimSpace: Int] = [:]
    /// Keys claimed in each space, by number.
    private var keysInSpace: [Int] = []
    private var claims: [Key: Holders] = [:]
    /// Services by number, and numbers by service; a removed service's number is reused.
    private var services: [ObjectRef] = []
    private var numbers: [ObjectRef: Int32] = [:]
    private var unused: [Int32] = []
    /// How many fragments put something in each table.
    private(set) var population: [TableRef: Int] = [:]
    /// How many fragments have rules in each family.
    private(set) var familyPopulation: [Family: Int] = [:]
    private(set) var healthChecks: [ObjectRef: HealthCheck] = [:]
    private(set) var noLocalEndpoints: (internal: Int, external: Int) = (0, 0)

    init(_ fragments: some Collection<ServiceFragment>) {
        claims.reserveCapacity(fragments.reduce(0) { $0 + $1.elements.count })
        services.reserveCapacity(fragments.count)
        numbers.reserveCapacity(fragments.count)
        for fragment in fragments { add(fragment) }
    }

    /// The element that holds `key`, read from `fragments`: those this index was built from.
    func holder(_ key: RulesetAssembly.ElementKey, in fragments: [ObjectRef: ServiceFragment]) -> RulesetAssembly.Held? {
        guard let space = spaces[key.space], let claim = claims[Key(space: space, key: key.key)]?.first else { return nil }
        return held(claim, in: fragments)
    }

    /// The element a claim names, in `fragments`.
    private func held(_ claim: Claim, in fragments: [ObjectRef: ServiceFragment]) -> RulesetAssembly.Held? {
        guard let fragment = fragments[services[Int(claim.service)]] else { return nil }
        let placed = fragment.elements[Int(claim.order)]
        return RulesetAssembly.Held(table: placed.table, element: placed.element)
    }

    /// The keys of a fragment's elements, in order; a fragment's elements go to a handful of sets.
    private mutating func keys(_ fragment: ServiceFragment) -> [Key] {
        var recent: [(table: TableRef, set: Name, space: Int)] = []
        return fragment.elements.map { placed in
            if let known = recent.first(where: { $0.set == placed.set && $0.table == placed.table }) {
                return Key(space: known.space, key: placed.element.key)
            }
            let space = RulesetAssembly.ClaimSpace(family: placed.table.family, set: placed.set)
            let number = spaces[space, default: spaces.count]
            if number == spaces.count {
                spaces[space] = number
                keysInSpace.append(0)
            }
            recent.append((placed.table, placed.set, number))
            return Key(space: number, key: placed.element.key)
        }
    }

    private func precedes(_ a: Claim, _ b: Claim) -> Bool {
        (services[Int(a.service)], a.order) < (services[Int(b.service)], b.order)
    }

    /// How many keys are claimed in a space.
    func keyCount(_ space: RulesetAssembly.ClaimSpace) -> Int { spaces[space].map { keysInSpace[$0] } ?? 0 }

    /// Every key claimed in a space, with its holder (read from `fragments`, as `holder` does).
    /// It walks every claimed key: a family's hairpin buckets change rarely.
    func holders(_ space: RulesetAssembly.ClaimSpace, in fragments: [ObjectRef: ServiceFragment]) -> [(key: [KeyValue], holder: RulesetAssembly.Held)] {
        guard let number = spaces[space] else { return [] }
        return claims.compactMap { key, holders in
            guard key.space == number, let claim = holders.first, let held = held(claim, in: fragments) else { return nil }
            return (key.key, held)
        }
    }

    mutating func add(_ fragment: ServiceFragment) {
        let service: Int32
        if let number = unused.popLast() {
            service = number
            services[Int(number)] = fragment.service
        } else {
            service = Int32(services.count)
            services.append(fragment.service)
        }
        numbers[fragment.service] = service
        for (order, key) in keys(fragment).enumerated() {
            let claim = Claim(service: service, order: Int32(order))
            let position = claims.index(forKey: key)
            switch position.map({ claims.values[$0] }) {
            case nil, .none?:
                claims[key] = .one(claim)
                keysInSpace[key.space] += 1
            case .one(let held)?:
                claims.values[position!] = .several(precedes(claim, held) ? [claim, held] : [held, claim])
            case .several(var held)?:
                claims.values[position!] = .none  // `held` is then the array's only holder, and grows in place
                held.insert(claim, at: held.firstIndex { precedes(claim, $0) } ?? held.count)
                claims.values[position!] = .several(held)
            }
        }
        count(fragment, by: 1)
    }

    mutating func remove(_ fragment: ServiceFragment) {
        guard let service = numbers.removeValue(forKey: fragment.service) else { return }
        for key in keys(fragment) {
            guard let position = claims.index(forKey: key) else { continue }
            switch claims.values[position] {
            case .none:
                claims.remove(at: position)
                keysInSpace[key.space] -= 1
            case .one(let held):
                if held.service == service {
                    claims.remove(at: position)
                    keysInSpace[key.space] -= 1
                }
            case .several(var held):
                claims.values[position] = .none
                held.removeAll { $0.service == service }  // a service may claim one key twice
                switch held.count {
                case 0:
                    claims.remove(at: position)
                    keysInSpace[key.space] -= 1
                case 1: claims.values[position] = .one(held[0])
                default: claims.values[position] = .several(held)
                }
            }
        }
        unused.append(service)
        count(fragment, by: -1)
    }

    private mutating func count(_ fragment: ServiceFragment, by delta: Int) {
        healthChecks[fragment.service] = delta > 0 ? fragment.healthCheck : nil
        if fragment.noLocalEndpoints.internal { noLocalEndpoints.internal += delta }
        if fragment.noLocalEndpoints.external { noLocalEndpoints.external += delta }
        let tables = fragment.tables
        for table in tables { population[table, default: 0] += delta }
        for family in Set(tables.map(\.family)) { familyPopulation[family, default: 0] += delta }
    }
}

extension Table {
    /// Chains by name and elements by key: the order a compile lists them in.
    fileprivate var inOrder: Table {
        var copy = self
        copy.chains.sort { $0.name < $1.name }
        for index in copy.sets.indices { copy.sets[index].elements.sort { $0.key.lexicographicallyPrecedes($1.key) } }
        return copy
    }
}
