package task

import "sync"

// Store maps Nomad task IDs to live handles.
type Store struct {
	mu    sync.RWMutex
	tasks map[string]*Handle
}

func NewStore() *Store { return &Store{tasks: map[string]*Handle{}} }

func (s *Store) Get(id string) (*Handle, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h, ok := s.tasks[id]
	return h, ok
}

func (s *Store) Set(id string, h *Handle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tasks[id] = h
}

func (s *Store) Delete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tasks, id)
}
