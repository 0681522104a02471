package keys

// SetRotateBatch sets how many rows RotateMaster lists per query and returns
// a function restoring the old value.
func SetRotateBatch(n int) (restore func()) {
	old := rotateBatch
	rotateBatch = n
	return func() { rotateBatch = old }
}
