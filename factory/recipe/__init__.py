from factory.recipe.loader import LoadedRecipe, load_recipe
from factory.recipe.model import Recipe

__all__ = ["LoadedRecipe", "Recipe", "load_recipe"]
