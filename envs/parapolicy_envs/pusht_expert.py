"""Scripted PushT expert: greedy push primitives, each checked in a cloned simulator.

Design (see the project's PushT expert notes): the physics is quasi-static and
frictionless, so a push moves the block only along the contact normal while the agent
pushes. Every decision screens ~70 contact candidates on the T's outline at one or two
push speeds in a cheap clone of the pymunk scene, plans a collision-free approach path
to the best few, simulates each complete plan (approach + push + stop) from the true
state, and samples one of the best plans. The plan runs open loop, then it decides again.
Sampling among near-best plans gives the demonstrations several modes.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import pymunk
from shapely.geometry import LineString, Point, Polygon

GOAL_POSE = np.array([256.0, 256.0, math.pi / 4])
COG_LOCAL = np.array([0.0, 45.0])
OUTLINE = np.array([(-60, 0), (60, 0), (60, 30), (15, 30), (15, 120), (-15, 120), (-15, 30), (-60, 30)], float)
AGENT_R = 15.0
LO, HI = 22.0, 490.0


def _rot(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]])


def _wrap(a):
    return (a + math.pi) % (2 * math.pi) - math.pi


def _goal_cog():
    return GOAL_POSE[:2] + _rot(GOAL_POSE[2]) @ COG_LOCAL


GOAL_COG = _goal_cog()


class CloneSim:
    """A pymunk scene identical to gym-pusht's (walls, kinematic agent, T), cheap to reload."""

    def __init__(self):
        self.space = pymunk.Space()
        self.space.gravity = (0, 0)
        self.space.damping = 0.0
        for a, b in [((5, 506), (5, 5)), ((5, 5), (506, 5)), ((506, 5), (506, 506)), ((5, 506), (506, 506))]:
            self.space.add(pymunk.Segment(self.space.static_body, a, b, 2))
        self.agent = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        self.space.add(self.agent, pymunk.Circle(self.agent, AGENT_R))
        bar = [(-60, 30), (60, 30), (60, 0), (-60, 0)]
        stem = [(-15, 30), (-15, 120), (15, 120), (15, 30)]
        moment = 2 * pymunk.moment_for_poly(1, vertices=bar)  # gym-pusht counts the bar twice
        self.block = pymunk.Body(1, moment)
        self.space.add(self.block, pymunk.Poly(self.block, bar), pymunk.Poly(self.block, stem))
        self.block.center_of_gravity = tuple(COG_LOCAL)

    def load(self, agent_pos, agent_vel, block_pos, block_angle):
        self.agent.position = tuple(agent_pos)
        self.agent.velocity = tuple(agent_vel)
        self.block.angle = float(block_angle)  # angle first, then position: the origin lands exactly
        self.block.position = tuple(block_pos)
        self.block.velocity = (0, 0)
        self.block.angular_velocity = 0.0

    def step(self, target):
        tx, ty = float(target[0]), float(target[1])
        for _ in range(10):
            px, py = self.agent.position
            vx, vy = self.agent.velocity
            self.agent.velocity = (vx + (100 * (tx - px) - 20 * vx) * 0.01, vy + (100 * (ty - py) - 20 * vy) * 0.01)
            self.space.step(0.01)

    def block_pose(self):
        return np.array([*self.block.position, self.block.angle])

    def agent_pos(self):
        return np.array(self.agent.position)


def cost(pose, lam=60.0) -> float:
    """Squared distance to the goal: centre-of-gravity error (px) and weighted angle error."""
    cog = pose[:2] + _rot(pose[2]) @ COG_LOCAL
    return float(np.sum((cog - GOAL_COG) ** 2) + (lam * _wrap(pose[2] - GOAL_POSE[2])) ** 2)


def _contact_candidates(edge_step=8.0, gap=4.0):
    """(point, outward normal) pairs in the body frame along the outline and at convex corners."""
    poly = Polygon(OUTLINE)
    n = len(OUTLINE)
    normals = []
    for i in range(n):
        a, b = OUTLINE[i], OUTLINE[(i + 1) % n]
        d = (b - a) / np.linalg.norm(b - a)
        nrm = np.array([d[1], -d[0]])
        if poly.contains(Point(*((a + b) / 2 + nrm * 0.5))):
            nrm = -nrm
        normals.append(nrm)
    points = []
    for i in range(n):
        a, b = OUTLINE[i], OUTLINE[(i + 1) % n]
        pieces = max(1, int(round(np.linalg.norm(b - a) / edge_step)))
        for j in range(pieces):
            points.append(((a + (b - a) * (j + 0.5) / pieces), normals[i]))
    for i in range(n):  # corner i joins edge i-1 and edge i
        n1, n2 = normals[i - 1], normals[i]
        if np.cross(n1, n2) * np.cross(OUTLINE[i] - OUTLINE[i - 1], OUTLINE[(i + 1) % n] - OUTLINE[i]) <= 0:
            continue  # concave corner
        a1, a2 = math.atan2(n1[1], n1[0]), math.atan2(n2[1], n2[0])
        diff = _wrap(a2 - a1)
        if abs(diff) < 1e-6 or poly.contains(Point(*(OUTLINE[i] + (n1 + n2)))):
            continue
        for frac in (1 / 3, 2 / 3):
            ang = a1 + diff * frac
            points.append((OUTLINE[i].copy(), np.array([math.cos(ang), math.sin(ang)])))
    keep = []
    for c, nrm in points:
        pre = c + nrm * (AGENT_R + gap)
        if poly.exterior.distance(Point(*pre)) >= 18.5 and not poly.contains(Point(*pre)):
            keep.append((c, nrm))
    return keep


class PushTExpert:
    """``act(env)`` returns the next target; it reads the true state from the env's bodies."""

    def __init__(self, rng=None, v_push=10.0, v_move=22.0, gap=4.0, horizon=15, lam=60.0, n_final=12,
                 top_frac=0.85, randomize=False):
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.base = dict(v_push=v_push, v_move=v_move, top_frac=top_frac)
        self.randomize = randomize
        self.gap, self.horizon, self.lam, self.n_final = gap, horizon, lam, n_final
        self.candidates = _contact_candidates(gap=gap)
        self.sim = CloneSim()
        self.plan: list[np.ndarray] = []
        self.reset()

    def reset(self):
        self.plan = []
        p = dict(self.base)
        if self.randomize:
            p = dict(v_push=self.rng.uniform(8, 12), v_move=self.rng.uniform(18, 26), top_frac=self.rng.uniform(0.6, 0.9))
        self.v_push, self.v_move, self.top_frac = p["v_push"], p["v_move"], p["top_frac"]

    # ------------------------------------------------------------------ public
    def act(self, env) -> np.ndarray:
        sim_env = env.sim if hasattr(env, "sim") else env
        state = (np.array(sim_env.agent.position), np.array(sim_env.agent.velocity),
                 np.array(sim_env.block.position), float(sim_env.block.angle))
        if not self.plan:
            self.plan = self._decide(*state)
        return np.clip(self.plan.pop(0), 0, 512)

    # ------------------------------------------------------------------ decision
    def _speeds(self, dist):
        v = self.v_push
        if dist > 40:
            return [v]
        if dist > 12:
            return [v, v / 2]
        return [v / 2, v / 4]

    def _decide(self, agent_pos, agent_vel, block_pos, block_angle):
        pose0 = np.array([*block_pos, block_angle])
        c0 = math.sqrt(cost(pose0, self.lam))
        rot = _rot(block_angle)
        screened = []
        for c_local, n_local in self.candidates:
            n_world = rot @ n_local
            pre = block_pos + rot @ c_local + n_world * (AGENT_R + self.gap)
            if not (LO <= pre[0] <= HI and LO <= pre[1] <= HI):
                continue
            for v in self._speeds(c0):
                k_best, c_best = self._screen(pre, -n_world, v, block_pos, block_angle)
                if k_best and c0 - c_best > 0:
                    score = (c0 - c_best) / (np.linalg.norm(pre - agent_pos) / self.v_move + k_best + 2)
                    screened.append((score, pre, n_world, v, k_best))
        screened.sort(key=lambda s: -s[0])
        tee = Polygon((OUTLINE @ rot.T) + block_pos)
        plans = []
        for _, pre, n_world, v, kstar in screened[: self.n_final]:
            plan = self._full_plan(agent_pos, agent_vel, block_pos, block_angle, tee, pre, n_world, v, kstar, c0)
            if plan is not None:
                plans.append(plan)
        if not plans:  # no progress possible: drift toward the centre and look again
            return [agent_pos + 0.1 * (np.array([256.0, 256.0]) - agent_pos)]
        best = max(p[0] for p in plans)
        pool = [p for p in plans if p[0] >= self.top_frac * best]
        weights = np.array([p[0] for p in pool])
        choice = pool[self.rng.choice(len(pool), p=weights / weights.sum())]
        return [np.asarray(t, dtype=np.float64) for t in choice[1]]

    def _screen(self, pre, d, v, block_pos, block_angle):
        sim = self.sim
        sim.load(pre - 2 * v * d, 10 * v * d, block_pos, block_angle)
        k_best, c_best = 0, math.inf
        for t in range(self.horizon):
            target = pre + d * v * (t + 1)
            if not (LO <= target[0] <= HI and LO <= target[1] <= HI):
                break
            sim.step(target)
            c = math.sqrt(cost(sim.block_pose(), self.lam))
            if c < c_best:
                k_best, c_best = t + 1, c
        return k_best, c_best

    def _full_plan(self, agent_pos, agent_vel, block_pos, block_angle, tee, pre, n_world, v, kstar, c0):
        d = -n_world
        best = None
        for clear in (3.0, 10.0, 20.0):
            nav = self._navigation(agent_pos, tee, pre, n_world, v, clear)
            if nav is None:
                continue
            disturbed = False
            for k in sorted({max(1, kstar - 2), max(1, kstar - 1), kstar}):
                result = self._simulate(agent_pos, agent_vel, block_pos, block_angle, nav, pre, d, v, k)
                if result is None:
                    disturbed = True
                    continue
                targets, c_end = result
                score = (c0 - c_end) / (len(targets) + 2)
                if c0 - c_end > 0 and (best is None or score > best[0]):
                    best = (score, targets)
            if best is not None or not disturbed:
                break
        return best

    def _navigation(self, agent_pos, tee, pre, n_world, v, clear):
        """Carrot targets from the agent to p_pre around the T (None if no safe approach)."""
        obstacle = tee.buffer(AGENT_R + clear, quad_segs=2)
        entry = np.array(pre, dtype=float)
        for _ in range(40):
            if not obstacle.contains(Point(*entry)):
                break
            entry = entry + n_world * 3.0
        else:
            return None
        if LineString([entry, pre]).distance(tee) < AGENT_R + self.gap - 1 and np.linalg.norm(entry - pre) > 1e-6:
            return None
        start, waypoints = np.array(agent_pos, dtype=float), []
        if obstacle.contains(Point(*start)):
            start = self._escape(start, tee, obstacle, clear)
            if start is None:
                return None
            waypoints.append(start)
        path = self._shortest_path(start, entry, tee, obstacle, clear)
        if path is None:
            return None
        polyline = [np.array(agent_pos, dtype=float)] + waypoints + path[1:]
        targets = _resample(polyline, self.v_move)
        targets += _resample([entry, np.asarray(pre, dtype=float)], v)
        return targets

    def _escape(self, agent, tee, obstacle, clear):
        nearest = tee.exterior.interpolate(tee.exterior.project(Point(*agent)))
        nearest = np.array([nearest.x, nearest.y])
        ray = agent - nearest
        norm = np.linalg.norm(ray)
        if norm < 1e-6:
            return None
        ray /= norm
        dist = AGENT_R + clear + 1
        for _ in range(40):
            p = nearest + ray * dist
            if not obstacle.contains(Point(*p)):
                return np.clip(p, LO, HI)
            dist += 3.0
        return None

    def _shortest_path(self, start, goal, tee, obstacle, clear):
        def free(a, b):
            return not LineString([a, b]).intersects(obstacle) if np.linalg.norm(a - b) > 1e-9 else True

        if free(start, goal):
            return [start, goal]
        ring = tee.buffer(AGENT_R + clear + 4, quad_segs=2).exterior.coords[:-1]
        nodes = [start, goal] + [np.array(p) for p in ring if LO <= p[0] <= HI and LO <= p[1] <= HI]
        n = len(nodes)
        dist = [math.inf] * n
        prev = [-1] * n
        dist[0] = 0.0
        heap = [(0.0, 0)]
        while heap:
            du, u = heapq.heappop(heap)
            if u == 1:
                break
            if du > dist[u]:
                continue
            for w in range(1, n):
                if w == u:
                    continue
                step = float(np.linalg.norm(nodes[u] - nodes[w]))
                if du + step < dist[w] and free(nodes[u], nodes[w]):
                    dist[w], prev[w] = du + step, u
                    heapq.heappush(heap, (dist[w], w))
        if math.isinf(dist[1]):
            return None
        path, u = [], 1
        while u != -1:
            path.append(nodes[u])
            u = prev[u]
        return path[::-1]

    def _simulate(self, agent_pos, agent_vel, block_pos, block_angle, nav, pre, d, v, k):
        """Run nav + k pushes + 2 stops from the true state; None if navigation moved the block."""
        sim = self.sim
        sim.load(agent_pos, agent_vel, block_pos, block_angle)
        start_pose = sim.block_pose()
        targets = []
        for i, target in enumerate(nav):
            target = np.clip(target, 20, 492)
            sim.step(target)
            targets.append(target)
            if (i + 1) % 4 == 0 or i == len(nav) - 1:
                moved = sim.block_pose() - start_pose
                if np.linalg.norm(moved[:2]) > 0.5 or abs(moved[2]) > 0.005:
                    return None
        for t in range(k):
            target = np.clip(pre + d * v * (t + 1), 20, 492)
            sim.step(target)
            targets.append(target)
        for _ in range(2):
            target = np.clip(sim.agent_pos() - 2 * d, 20, 492)
            sim.step(target)
            targets.append(target)
        return targets, math.sqrt(cost(sim.block_pose(), self.lam))


def _resample(polyline, spacing):
    """Points every ``spacing`` px along a polyline, ending exactly at its last vertex."""
    out = []
    for a, b in zip(polyline[:-1], polyline[1:]):
        seg = np.asarray(b, float) - np.asarray(a, float)
        length = float(np.linalg.norm(seg))
        if length < 1e-9:
            continue
        steps = max(1, int(math.ceil(length / spacing)))
        out.extend(np.asarray(a, float) + seg * (j + 1) / steps for j in range(steps))
    return out
