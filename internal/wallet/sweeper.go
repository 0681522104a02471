package wallet

import (
	"context"
	"time"
)

// runSweeper releases proposals whose reservation expired.
func (s *Service) runSweeper(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.ExpireProposals(ctx, time.Now()); err != nil && ctx.Err() == nil {
				s.log.Warn("wallet: expiring proposals failed", "err", err)
			}
		}
	}
}
