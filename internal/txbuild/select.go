package txbuild

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
)

// bnbMaxTries bounds the branch and bound search, as in Bitcoin Core.
const bnbMaxTries = 100_000

// randomPasses is how many shuffled accumulations the fallback tries. The
// seed is fixed so the same request always selects the same coins.
const randomPasses = 8

// sendAllCoins returns the Include'd coins and every other coin worth more
// than it costs to spend. Coins with a non-positive effective value would
// only lower the amount sent, so they stay behind unless Include'd.
func (p *plan) sendAllCoins() []int {
	var out []int
	for i := range p.coins {
		if p.coins[i].preset || p.coins[i].ev > 0 {
			out = append(out, i)
		}
	}
	return out
}

// selectCoins picks the coins that pay for the outputs. Include'd coins are
// always spent first (whatever their effective value); the rest of the
// target comes from coins with a positive effective value, first by branch
// and bound looking for a changeless match, then by the least wasteful of a
// few simple strategies.
func (p *plan) selectCoins() ([]int, string, error) {
	target := p.paySum + p.baseFee
	for _, i := range p.presets {
		target -= p.coins[i].ev
	}
	if len(p.presets) > 0 && target <= 0 {
		return slices.Clone(p.presets), AlgoManual, nil
	}

	var pool []int
	var poolSum int64
	for i := range p.coins {
		if c := &p.coins[i]; !c.preset && c.ev > 0 {
			pool = append(pool, i)
			poolSum += c.ev
		}
	}
	if poolSum < target {
		return nil, "", p.insufficient(append(slices.Clone(p.presets), pool...))
	}
	// Largest effective value first; ties broken by cheaper to spend, then
	// candidate order, so the search is deterministic.
	slices.SortStableFunc(pool, func(a, b int) int {
		if c := cmp.Compare(p.coins[b].ev, p.coins[a].ev); c != 0 {
			return c
		}
		return cmp.Compare(p.coins[a].fee, p.coins[b].fee)
	})

	if sel := p.bnb(pool, target); sel != nil {
		return append(slices.Clone(p.presets), sel...), AlgoBnB, nil
	}
	sel := p.leastWaste(pool, target)
	return append(slices.Clone(p.presets), sel...), AlgoWaste, nil
}

// bnb searches for a subset of pool (sorted by descending effective value)
// whose effective value lands in [target, target+costOfChange], so no
// change is needed, and returns the one with the least waste, or nil.
func (p *plan) bnb(pool []int, target int64) []int {
	s := bnbSearch{
		p:         p,
		pool:      pool,
		target:    target,
		upper:     target + p.costOfChange,
		bestWaste: math.MaxInt64,
		// Input waste only grows as inputs are added when the fee rate is
		// at least the long-term rate; only then can it prune.
		prune:  p.rate >= p.longTerm,
		remain: make([]int64, len(pool)+1),
	}
	for i := len(pool) - 1; i >= 0; i-- {
		s.remain[i] = s.remain[i+1] + p.coins[pool[i]].ev
	}
	s.visit(0, 0, 0)
	return s.best
}

type bnbSearch struct {
	p             *plan
	pool          []int
	target, upper int64
	remain        []int64 // remain[i] is the effective value of pool[i:]
	prune         bool
	tries         int
	sel           []int
	best          []int
	bestWaste     int64
}

// visit decides on pool[i] given the selection so far, of effective value
// val and input waste waste: first with it, then without it.
func (s *bnbSearch) visit(i int, val, waste int64) {
	if s.tries >= bnbMaxTries {
		return
	}
	s.tries++
	switch {
	case val > s.upper:
		return // overshot: more inputs only make it worse
	case val >= s.target:
		if w := waste + val - s.target; w < s.bestWaste {
			s.best, s.bestWaste = slices.Clone(s.sel), w
		}
		return
	case val+s.remain[i] < s.target:
		return // even everything left is not enough
	case s.prune && waste > s.bestWaste:
		return
	}
	c := &s.p.coins[s.pool[i]]
	s.sel = append(s.sel, s.pool[i])
	s.visit(i+1, val+c.ev, waste+c.waste)
	s.sel = s.sel[:len(s.sel)-1]
	// Leaving pool[i] out and taking an identical coin after it would
	// only repeat the search above, so skip those too.
	j := i + 1
	for j < len(s.pool) && s.p.coins[s.pool[j]].ev == c.ev && s.p.coins[s.pool[j]].waste == c.waste {
		j++
	}
	s.visit(j, val, waste)
}

// leastWaste tries a few selection strategies aiming for target plus a
// change output worth having, and returns the selection with the least
// waste. pool is sorted by descending effective value and covers target.
func (p *plan) leastWaste(pool []int, target int64) []int {
	goal := target + p.changeFee + p.changeMin
	var best []int
	bestWaste, bestEV := int64(math.MaxInt64), int64(0)
	// Least waste wins; on a tie, like Core, more inputs (consolidating
	// at no extra cost), then the smaller total, so less is moved to
	// change.
	try := func(sel []int) {
		if sel == nil {
			return
		}
		w, ev := p.waste(sel, target), p.sumEV(sel)
		if c := cmp.Or(cmp.Compare(w, bestWaste), cmp.Compare(len(best), len(sel)), cmp.Compare(ev, bestEV)); c < 0 {
			best, bestWaste, bestEV = sel, w, ev
		}
	}

	try(p.accumulate(pool, target, goal))
	try(p.accumulate(reversed(pool), target, goal))
	// The smallest single coin that covers the goal on its own.
	for i := len(pool) - 1; i >= 0; i-- {
		if p.coins[pool[i]].ev >= goal {
			try([]int{pool[i]})
			break
		}
	}
	r := rand.New(rand.NewPCG(0x636f66666572, uint64(len(pool))))
	shuffled := slices.Clone(pool)
	for range randomPasses {
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		try(p.accumulate(shuffled, target, goal))
	}
	return best
}

// accumulate takes coins in order until they reach goal (or, failing that,
// everything, which reaches target), then drops the smallest coins that are
// not needed.
func (p *plan) accumulate(order []int, target, goal int64) []int {
	var sel []int
	var sum int64
	for _, i := range order {
		sel = append(sel, i)
		if sum += p.coins[i].ev; sum >= goal {
			break
		}
	}
	if sum < target {
		return nil
	}
	need := goal
	if sum < goal {
		need = target
	}
	slices.SortFunc(sel, func(a, b int) int { return cmp.Compare(p.coins[a].ev, p.coins[b].ev) })
	kept := sel[:0]
	for k, i := range sel {
		if ev := p.coins[i].ev; sum-ev >= need {
			sum -= ev
			continue
		}
		kept = append(kept, sel[k])
	}
	return kept
}

// waste is Core's waste metric for a selection of effective value at least
// target: what its inputs cost now beyond the long-term rate, plus either
// the cost of the change output (created now, spent later) or, without
// change, the excess given to miners.
func (p *plan) waste(sel []int, target int64) int64 {
	var w int64
	for _, i := range sel {
		w += p.coins[i].waste
	}
	excess := p.sumEV(sel) - target
	if excess-p.changeFee >= p.changeMin {
		return w + p.costOfChange
	}
	return w + excess
}

func (p *plan) sumEV(sel []int) int64 {
	var ev int64
	for _, i := range sel {
		ev += p.coins[i].ev
	}
	return ev
}

func reversed(s []int) []int {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}
